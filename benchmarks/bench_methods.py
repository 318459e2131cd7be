"""Accuracy and cost of methods on real maths (GSM8K), through the whole distributed stack.

The script starts its own stack on free loopback ports: nats-server (JetStream), llama.cpp
serving the model, a generation worker, a judge reward worker (the same model's Yes/No
log-probs), a tools worker (``python`` for program-aided voting) and the controller service.
Each problem becomes one job per method, submitted with ``JobClient`` as any client would;
the methods run interleaved problem by problem, so a stopped run still compares them on the
same problems, and ``--resume`` carries on where the JSONL stops.

Reported per method: accuracy with a 95% Wilson interval; the paired comparison with greedy
on the same problems (problems only one of them got right, exact McNemar p); completion
tokens, wall seconds and tasks per problem. Writes the raw per-problem JSONL (``--out``), a
Markdown table (``--markdown``) and a chart of accuracy against tokens (``--chart``).

Run (from the checkout; ``make model-qwen`` first):
``python -m benchmarks.bench_methods --model qwen-0.5b --limit 100 --methods greedy vote weighted_vote program_vote``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.datasets import GSM8K, Problem, answer_of, is_correct, load
from benchmarks.stats import paired, wilson
from scaffolding_nats.client import JobClient
from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.proto import Job, SamplingParams, Subjects

NUMBER = {"extractor": "number"}
"""Answers are numbers: "$18." and "18 dollars" must vote (and score) as one answer."""


@dataclass(frozen=True)
class MethodSpec:
    """One benchmarked configuration: a registered method, its parameter overrides, whether
    its samples are drawn at ``--temperature`` (else greedy), and how it is prompted."""

    key: str
    label: str
    method: str
    params: dict[str, Any]
    sampled: bool
    prompt_style: str = "cot"
    needs: tuple[str, ...] = ()


def method_specs(args: argparse.Namespace) -> dict[str, MethodSpec]:
    n = args.vote_n
    vote = {"sample_num": n, **NUMBER}
    dynasor = {"chunk_size": args.chunk_size, "certainty_threshold": args.certainty, "probe_max_tokens": 20}
    deepconf = {"num_traces": 8, "warmup_traces": 4, "wave_size": 2, "consensus": 0.75, "conf_group_size": 64, **NUMBER}
    specs = [
        MethodSpec("greedy", "greedy (1 sample)", "native", {}, sampled=False),
        MethodSpec("vote", f"majority vote@{n}", "majority_vote", vote, sampled=True),
        MethodSpec(
            "weighted_vote",
            f"confidence-weighted vote@{n}",
            "majority_vote",
            {**vote, "weighting": "mean_logprob"},
            sampled=True,
        ),
        MethodSpec(
            "program_vote",
            f"program-aided vote@{args.program_n or n}",
            "program_vote",
            {"sample_num": args.program_n or n, "tool_name": args.python_tool},
            sampled=True,
            prompt_style="plain",
            needs=("python",),
        ),
        MethodSpec("vote8", "majority vote@8", "majority_vote", {"sample_num": 8, **NUMBER}, sampled=True),
        MethodSpec(
            "best_of_n",
            f"best-of-{args.bon_n} (Yes/No judge)",
            "best_of_n",
            {"sample_num": args.bon_n, **NUMBER},
            sampled=True,
            needs=("reward",),
        ),
        MethodSpec(
            "dynasor",
            f"Dynasor-CoT (chunk {args.chunk_size}, k={args.certainty})",
            "dynasor",
            {**dynasor, **NUMBER},
            sampled=False,
        ),
        MethodSpec(
            "deepconf_online",
            "DeepConf online (≤8 traces: 4 warm-up, then waves of 2 until 75% agree)",
            "deepconf_online",
            deepconf,
            sampled=True,
        ),
        MethodSpec(  # the paper's DeepConf-low: keep the top 10 %, cancel the rest early
            "deepconf_low",
            "DeepConf-low online (as above, threshold at the warm-up's 90th percentile)",
            "deepconf_online",
            {**deepconf, "confidence_percentile": 90},
            sampled=True,
        ),
    ]
    return {s.key: s for s in specs}


@dataclass
class Record:
    """One problem under one method: a line of the JSONL."""

    method: str
    label: str
    problem: str
    expected: float
    answer: str | None
    correct: bool
    completion_tokens: int = 0
    prompt_tokens: int = 0
    num_tasks: int = 0
    wall_s: float = 0.0
    stop_reason: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    text: str = ""


@dataclass
class Summary:
    key: str
    label: str
    records: list[Record]

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.records)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def per_problem(self, name: str) -> float:
        return sum(getattr(r, name) for r in self.records) / max(self.n, 1)


# -- running ---------------------------------------------------------------------------------


def lacks_logprobs(extra: dict[str, Any]) -> bool:
    """Log-prob weights asked for and none came back (an unweighted vote, zero confidences)."""
    weights, confidences = extra.get("weights"), extra.get("trace_confidences")
    if weights and all(w is None for w in weights):
        return True
    return bool(confidences) and not any(confidences)


async def run_one(
    client: JobClient, spec: MethodSpec, problem: Problem, index: int, args: argparse.Namespace
) -> Record:
    sampling = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature if spec.sampled else 0.0,
        seed=args.seed + index,  # a job seed: each sample derives its own from it
    )
    job = Job(
        method=spec.method,
        params=spec.params,
        messages=[{"role": "user", "content": problem.prompt(spec.prompt_style)}],
        sampling=sampling,
    )
    started = time.monotonic()
    try:
        result = await client.run(job, timeout=args.job_timeout)
    except ScaffoldingError as exc:
        return Record(
            spec.key, spec.label, problem.id, problem.answer, None, False,
            wall_s=time.monotonic() - started, error=f"{exc.code.value}: {exc.message[:200]}",
        )  # fmt: skip
    answer = answer_of(result.text, result.answer)
    keys = (
        "early_exit", "probes", "votes", "answers", "weights", "score", "scores", "index", "fallback",
        "num_answered", "trace_confidences", "stopped_early", "traces_started", "consensus_reached",
    )  # fmt: skip
    extra = {k: result.metadata[k] for k in keys if k in result.metadata}
    if lacks_logprobs(extra):  # a weighted method that silently weighted nothing is no result
        return Record(
            spec.key, spec.label, problem.id, problem.answer, answer, False,
            wall_s=time.monotonic() - started, error="the backend returned no log-probs", extra=extra,
        )  # fmt: skip
    return Record(
        method=spec.key,
        label=spec.label,
        problem=problem.id,
        expected=problem.answer,
        answer=answer,
        correct=is_correct(answer, problem.answer),
        completion_tokens=result.usage.completion_tokens,
        prompt_tokens=result.usage.prompt_tokens,
        num_tasks=result.num_tasks,
        wall_s=time.monotonic() - started,
        stop_reason=result.stop_reason,
        extra=extra,
        text=result.text[:3000],
    )


def done_pairs(path: Path | None) -> set[tuple[str, str]]:
    """(method, problem) pairs already in a JSONL, for ``--resume``."""
    if path is None or not path.exists():
        return set()
    return {(r.method, r.problem) for r in read_records(path)}


def read_records(path: Path) -> list[Record]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(Record(**json.loads(line)))
    return out


async def run_all(
    client: JobClient, specs: Sequence[MethodSpec], problems: Sequence[Problem], args: argparse.Namespace
) -> None:
    """Every (problem, method) pair not done yet, problem by problem, ``--concurrency`` jobs in
    flight; each record is appended to ``--out`` as it lands."""
    from tqdm import tqdm

    out = Path(args.out) if args.out else None
    skip = done_pairs(out) if args.resume else set()
    if out is not None and not args.resume:
        out.write_text("", encoding="utf-8")
    todo = [(i, p, s) for i, p in enumerate(problems) for s in specs if (s.key, p.id) not in skip]
    correct: dict[str, list[bool]] = {s.key: [] for s in specs}
    slots = asyncio.Semaphore(args.concurrency)
    bar = tqdm(total=len(todo), desc="jobs", unit="job", file=sys.stderr, mininterval=2.0, dynamic_ncols=True)

    async def one(index: int, problem: Problem, spec: MethodSpec) -> None:
        async with slots:
            record = await run_one(client, spec, problem, index, args)
        correct[spec.key].append(record.correct)
        if out is not None:
            line = json.dumps(asdict(record)) + "\n"
            await asyncio.to_thread(_append, out, line)
        bar.update(1)
        bar.set_postfix_str(
            " ".join(f"{k}={sum(v)}/{len(v)}" for k, v in correct.items() if v), refresh=False
        )
        if args.verbose:
            mark = "ok " if record.correct else ("ERR" if record.error else "-- ")
            bar.write(
                f"  {mark} {spec.key:14} {problem.id:18} want {problem.answer:g} got {record.answer!r} "
                f"{record.completion_tokens} tok {record.wall_s:.1f}s {record.error or ''}"
            )

    try:
        async with asyncio.TaskGroup() as tg:
            for index, problem, spec in todo:
                tg.create_task(one(index, problem, spec))
    finally:
        bar.close()


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)


# -- reporting -------------------------------------------------------------------------------


def summarise(records: Iterable[Record], specs: Sequence[MethodSpec], problem_ids: Sequence[str]) -> list[Summary]:
    """One summary per method over the problems that every listed method has finished (so
    comparisons are always paired)."""
    by_method: dict[str, dict[str, Record]] = {s.key: {} for s in specs}
    for r in records:
        if r.method in by_method:
            by_method[r.method][r.problem] = r
    common = [p for p in problem_ids if all(p in by_method[s.key] for s in specs)]
    return [Summary(s.key, s.label, [by_method[s.key][p] for p in common]) for s in specs]


def derived(summary: Summary, key: str, label: str, pick: Any, first: int | None = None) -> Summary | None:
    """Another aggregation of the very samples a weighted vote drew (its recorded answers and
    weights): ``pick(answers, weights)`` returns the chosen answer. Aggregations compared with
    no sampling noise between them. With ``first``, only that many samples count, and so
    ``first / N`` of the tokens (samples are i.i.d.; per-sample counts are not recorded)."""
    records = []
    for r in summary.records:
        answers, weights = r.extra.get("answers"), r.extra.get("weights")
        if answers is None and r.error is None:
            return None
        answer = pick(answers, weights) if answers else None
        number = answer_of("", answer) if answer is not None else None
        share = min(first, len(answers)) / len(answers) if first and answers else 1.0
        records.append(
            Record(**{**asdict(r), "method": f"{r.method}_{key}", "answer": number,
                      "correct": is_correct(number, r.expected),
                      "completion_tokens": round(r.completion_tokens * share),
                      "prompt_tokens": round(r.prompt_tokens * share), "num_tasks": round(r.num_tasks * share)})
        )  # fmt: skip
    return Summary(f"{summary.key}_{key}", label, records)


def twins(summary: Summary, first: int = 5) -> list[Summary]:
    """Plain vote over the same samples, plain vote over the first ``first`` of them, and
    best-of-N by the generator's own mean token log-prob."""
    from scaffolding_nats.methods.kit.voting import vote

    def plain(answers: list[str | None], weights: Any) -> str | None:
        return vote(answers).answer

    def first_k(answers: list[str | None], weights: Any) -> str | None:
        return vote(answers[:first]).answer

    def most_confident(answers: list[str | None], weights: list[float] | None) -> str | None:
        pairs = enumerate(zip(answers, weights or [], strict=False))
        scored = [(w, -i) for i, (a, w) in pairs if a is not None and w is not None]
        return answers[-max(scored)[1]] if scored else None

    n = max((len(r.extra.get("answers") or []) for r in summary.records), default=0)
    rows = [derived(summary, "unweighted", f"  majority vote@{n} (same samples)", plain)]
    if n > first:
        label = f"  majority vote@{first} (first {first} of them)"
        rows.append(derived(summary, f"first{first}", label, first_k, first=first))
    rows.append(derived(summary, "best_logprob", f"  best-of-{n} by mean log-prob (same samples)", most_confident))
    return [r for r in rows if r is not None]


def markdown(summaries: Sequence[Summary], header: str, baseline: str = "greedy") -> str:
    base = next((s for s in summaries if s.key == baseline), None)
    lines = [
        header,
        "",
        "| method | accuracy | 95% CI (Wilson) | vs greedy: only greedy / only this, McNemar p "
        "| completion tokens / problem | wall s / problem | tasks / problem | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lo, hi = wilson(s.correct, s.n)
        errors = sum(r.error is not None for r in s.records)
        if base is None or s is base:
            versus = "—"
        else:
            pair = paired([r.correct for r in base.records], [r.correct for r in s.records])
            versus = f"{pair.difference:+.1%}: {pair.only_a} / {pair.only_b}, p = {pair.p_value:.3g}"
        lines.append(
            f"| {s.label} | {s.correct}/{s.n} = {s.accuracy:.1%} | {lo:.1%} to {hi:.1%} | {versus} "
            f"| {s.per_problem('completion_tokens'):.0f} | {s.per_problem('wall_s'):.1f} "
            f"| {s.per_problem('num_tasks'):.1f} | {errors} |"
        )
    return "\n".join(lines)


def chart(summaries: Sequence[Summary], path: Path, title: str) -> None:
    """Accuracy against completion tokens per problem, one point per method with its 95%
    Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for s in summaries:
        if not s.n:
            continue
        lo, hi = wilson(s.correct, s.n)
        x = s.per_problem("completion_tokens")
        ax.errorbar(
            [x], [s.accuracy], yerr=[[s.accuracy - lo], [hi - s.accuracy]], fmt="o", capsize=4, label=s.label
        )
        ax.annotate(f"{s.accuracy:.0%}", (x, s.accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("completion tokens per problem (log scale)")
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(specs: Sequence[MethodSpec], problems: Sequence[Problem], args: argparse.Namespace, header: str) -> str:
    records = read_records(Path(args.out)) if args.out and Path(args.out).exists() else []
    summaries = summarise(records, specs, [p.id for p in problems])
    for s in list(summaries):
        if s.key == "weighted_vote":
            at = summaries.index(s) + 1
            summaries[at:at] = twins(s)
    table = markdown(summaries, header)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    if args.chart and summaries and summaries[0].n:
        title = f"{args.model}, {summaries[0].n} problems of {Path(args.data).name}"
        chart(summaries, Path(args.chart), title)
    return table


# -- the stack -------------------------------------------------------------------------------


async def tools_worker(args: argparse.Namespace) -> Any:
    """The tools worker program-aided voting calls: with its sandboxed ``python`` tool when the
    sandbox works here, else (only with ``--local-python``) with the benchmark's own limited
    subprocess as ``python``."""
    from scaffolding_nats.workers.tools import CALCULATOR
    from scaffolding_nats.workers.tools_worker import ToolsWorker

    worker = ToolsWorker(call_timeout=15)
    try:
        assert worker.sandbox is not None
        await worker.sandbox.check()
        return worker
    except Exception as exc:  # no bwrap on this machine
        reason = f"{type(exc).__name__}: {exc}"
    if args.local_python:
        from benchmarks.local_python import LOCAL_PYTHON

        print(f"sandboxed python tool unavailable ({reason}); using benchmarks.local_python", file=sys.stderr)
        return ToolsWorker([CALCULATOR, LOCAL_PYTHON], call_timeout=15, python=False)
    raise SystemExit(f"program_vote needs the python tool: {reason}; or pass --local-python")


async def main(args: argparse.Namespace) -> int:
    import nats

    from scaffolding_nats.devstack import ModelServer, NatsServer
    from scaffolding_nats.methods.registry import load_registry
    from scaffolding_nats.services.controller import ControllerService
    from scaffolding_nats.transport import WorkerHost
    from scaffolding_nats.workers import LogprobJudgeRewardWorker, OpenAIWorker
    all_specs = method_specs(args)
    unknown = [m for m in args.methods if m not in all_specs]
    if unknown:
        print(f"unknown methods {unknown}; choose from {sorted(all_specs)}", file=sys.stderr)
        return 2
    specs = [all_specs[m] for m in args.methods]
    problems = load(args.data)[args.offset : args.offset + args.limit]
    header = (
        f"Model: {args.model} on llama-server ({args.parallel} slots), {args.threads} threads. "
        f"{len(problems)} problems of {Path(args.data).name} from #{args.offset}, "
        f"max_tokens {args.max_tokens}, sampled methods at temperature {args.temperature}, "
        f"job seed {args.seed}+i, {args.concurrency} jobs in flight."
    )
    if args.report_only:
        print(report(specs, problems, args, header))
        return 0
    subjects = Subjects("bench")
    started = time.monotonic()
    with NatsServer(jetstream=True) as nats_server:
        model = ModelServer(
            args.model,
            n_ctx=args.n_ctx,
            n_threads=args.threads,
            startup_timeout=180,
            parallel=args.parallel,
        )
        async with model, AsyncExitStack() as stack:
            nc = await nats.connect(nats_server.url, max_reconnect_attempts=0)
            stack.push_async_callback(nc.close)
            # A request waits in llama.cpp's queue behind the others: an unstreamed one gets no
            # byte until it is done, so the read timeout must cover the whole job.
            generator = OpenAIWorker(
                model.base_url,
                model=model.model,
                max_concurrency=max(8, args.parallel),
                timeout=args.job_timeout,
                stream_plain=args.stream_plain,
            )
            hosts: list[tuple[Any, str]] = [(generator, "generation")]
            if any("reward" in s.needs for s in specs):
                judge = LogprobJudgeRewardWorker(
                    model.base_url, model.model, max_concurrency=4, timeout=args.job_timeout
                )
                hosts.append((judge, "reward"))
            if any("python" in s.needs for s in specs):
                hosts.append((await tools_worker(args), "tool_call"))
            for worker, tag in hosts:
                await stack.enter_async_context(WorkerHost(nc, worker, tags=[tag], subjects=subjects))
            await stack.enter_async_context(
                ControllerService(
                    nc,
                    load_registry(),
                    subjects=subjects,
                    max_jobs=args.concurrency,
                    max_job_seconds=args.job_timeout,
                    task_timeout=args.job_timeout,  # a sample may wait long in llama.cpp's queue
                )
            )
            await run_all(JobClient(nc, subjects=subjects), specs, problems, args)
    print(f"ran in {time.monotonic() - started:.0f}s", file=sys.stderr)
    print(report(specs, problems, args, header))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen-0.5b", help="qwen-0.5b (default), smollm2, or a .gguf path")
    p.add_argument("--data", default=str(GSM8K), help="JSONL with question/answer, or 'synthetic'")
    p.add_argument("--limit", type=int, default=100, help="problems to run (from --offset)")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=["greedy", "vote", "weighted_vote", "program_vote"])
    p.add_argument("--max-tokens", type=int, default=384)
    p.add_argument("--temperature", type=float, default=0.7, help="for sampled methods")
    p.add_argument("--vote-n", type=int, default=5, help="samples of vote, weighted_vote, program_vote")
    p.add_argument("--program-n", type=int, default=None, help="program_vote samples (default: --vote-n)")
    p.add_argument("--bon-n", type=int, default=4)
    p.add_argument("--chunk-size", type=int, default=64, help="Dynasor tokens between probes")
    p.add_argument("--certainty", type=int, default=2, help="Dynasor: agreeing probes to stop")
    p.add_argument("--python-tool", default="python", help="tool name program_vote calls")
    p.add_argument("--local-python", action="store_true", help="run programs in benchmarks.local_python")
    p.add_argument("--concurrency", type=int, default=1, help="jobs in flight")
    p.add_argument("--stream-plain", action="store_true", help="the worker streams plain tasks too")
    p.add_argument("--seed", type=int, default=1000, help="job seed base (job i gets seed + i)")
    p.add_argument("--job-timeout", type=float, default=3600.0)
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parallel", type=int, default=8, help="llama-server slots (batched requests)")
    p.add_argument("--out", default=None, help="per-problem records (JSONL), appended as they land")
    p.add_argument("--resume", action="store_true", help="skip (method, problem) pairs already in --out")
    p.add_argument("--markdown", default=None, help="write the table here")
    p.add_argument("--chart", default=None, help="write the accuracy-vs-tokens PNG here")
    p.add_argument("--report-only", action="store_true", help="only summarise --out (no stack)")
    p.add_argument("--verbose", action="store_true", help="one line per finished job")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
