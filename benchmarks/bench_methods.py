"""Accuracy and cost of methods on a real CPU model, through the whole distributed stack.

The script starts its own stack on free loopback ports: nats-server (JetStream), llama.cpp
serving the model, a generation worker, a judge reward worker (the same model's Yes/No
logprobs) and the controller service. Each problem of ``benchmarks.problems`` becomes one job
per method, submitted with ``JobClient`` as any client would.

Reported per method: accuracy with a 95% Wilson interval, generated tokens per problem (all
tasks: samples, probes, judge answers), prompt tokens per problem, wall seconds per problem
(the method's whole run divided by the problems: llama.cpp serves one request at a time, so
this is the throughput cost, dominated by tokens) and tasks per problem.

Run: ``python -m benchmarks.bench_methods --model smollm2 --limit 40``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats

from benchmarks.problems import DEFAULT_SEED, Problem, answer_of, generate, is_correct
from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import ModelServer, NatsServer
from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Job, SamplingParams, Subjects
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers import LogprobJudgeRewardWorker, OpenAIWorker


@dataclass(frozen=True)
class MethodSpec:
    """One benchmarked configuration: a registered method, its parameter overrides, and
    whether its samples are drawn at ``--temperature`` (else greedy)."""

    label: str
    method: str
    params: dict[str, Any]
    sampled: bool


NUMBER = {"extractor": "number"}
"""Answers are integers: "8 apples" and "8" must vote (and score) as one answer."""


def method_specs(args: argparse.Namespace) -> dict[str, MethodSpec]:
    vote = {"sample_num": args.vote_n, **NUMBER}
    dynasor = {"chunk_size": args.chunk_size, "certainty_threshold": args.certainty, "probe_max_tokens": 20}
    return {
        "native": MethodSpec("native (1 sample, greedy)", "native", {}, sampled=False),
        "majority_vote": MethodSpec(f"majority vote N={args.vote_n}", "majority_vote", vote, sampled=True),
        "best_of_n": MethodSpec(
            f"best-of-N N={args.bon_n} (judge)", "best_of_n", {"sample_num": args.bon_n, **NUMBER}, sampled=True
        ),
        "dynasor": MethodSpec(
            f"Dynasor-CoT (chunk {args.chunk_size}, k={args.certainty})",
            "dynasor",
            {**dynasor, **NUMBER},
            sampled=False,
        ),
    }


@dataclass
class Record:
    """One problem under one method."""

    problem: str
    expected: int
    answer: str | None
    correct: bool
    completion_tokens: int = 0
    prompt_tokens: int = 0
    num_tasks: int = 0
    latency_s: float = 0.0
    stop_reason: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    label: str
    records: list[Record]
    wall_s: float

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.records)

    def per_problem(self, name: str) -> float:
        return sum(getattr(r, name) for r in self.records) / max(self.n, 1)


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval: honest at small n and near 0 or 1, unlike p ± z·se."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


async def run_one(
    client: JobClient, spec: MethodSpec, problem: Problem, args: argparse.Namespace, index: int
) -> Record:
    sampling = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature if spec.sampled else 0.0,
        seed=args.seed + index,
    )
    job = Job(
        method=spec.method,
        params=spec.params,
        messages=[{"role": "user", "content": problem.prompt()}],
        sampling=sampling,
    )
    started = time.monotonic()
    try:
        result = await client.run(job, timeout=args.job_timeout)
    except ScaffoldingError as exc:
        error = f"{exc.code.value}: {exc.message[:200]}"
        return Record(problem.id, problem.answer, None, False, latency_s=time.monotonic() - started, error=error)
    answer = answer_of(result.text, result.answer)
    extra = {k: result.metadata[k] for k in ("early_exit", "probes", "votes", "score") if k in result.metadata}
    return Record(
        problem=problem.id,
        expected=problem.answer,
        answer=answer,
        correct=is_correct(answer, problem.answer),
        completion_tokens=result.usage.completion_tokens,
        prompt_tokens=result.usage.prompt_tokens,
        num_tasks=result.num_tasks,
        latency_s=time.monotonic() - started,
        stop_reason=result.stop_reason,
        extra=extra,
    )


async def run_method(
    client: JobClient, spec: MethodSpec, problems: Sequence[Problem], args: argparse.Namespace
) -> Summary:
    """All problems under one method, ``--concurrency`` jobs in flight."""
    slots = asyncio.Semaphore(args.concurrency)
    done = 0

    async def one(i: int, problem: Problem) -> Record:
        nonlocal done
        async with slots:
            record = await run_one(client, spec, problem, args, i)
        done += 1
        if args.verbose:
            mark = "ok " if record.correct else ("ERR" if record.error else "-- ")
            line = (
                f"  [{spec.method} {done}/{len(problems)}] {mark} {problem.id} want {problem.answer} "
                f"got {record.answer!r} {record.completion_tokens} tok {record.latency_s:.1f}s"
            )
            print(line, file=sys.stderr, flush=True)
        return record

    started = time.monotonic()
    records = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    return Summary(spec.label, list(records), time.monotonic() - started)


def markdown(summaries: Sequence[Summary], header: str) -> str:
    lines = [
        header,
        "",
        "| method | accuracy | 95% CI (Wilson) | gen tokens / problem | prompt tokens / problem "
        "| wall s / problem | tasks / problem | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lo, hi = wilson(s.correct, s.n)
        errors = sum(r.error is not None for r in s.records)
        lines.append(
            f"| {s.label} | {s.correct}/{s.n} = {s.correct / max(s.n, 1):.1%} | [{lo:.1%}, {hi:.1%}] "
            f"| {s.per_problem('completion_tokens'):.0f} | {s.per_problem('prompt_tokens'):.0f} "
            f"| {s.wall_s / max(s.n, 1):.2f} | {s.per_problem('num_tasks'):.1f} | {errors} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    specs = method_specs(args)
    unknown = [m for m in args.methods if m not in specs]
    if unknown:
        print(f"unknown methods {unknown}; choose from {sorted(specs)}", file=sys.stderr)
        return 2
    problems = generate(seed=args.problem_seed)[: args.limit]
    subjects = Subjects("bench")
    summaries: list[Summary] = []
    wall_started = time.monotonic()
    with NatsServer(jetstream=True) as nats_server:
        model = ModelServer(args.model, n_ctx=args.n_ctx, n_threads=args.threads, startup_timeout=120)
        async with model, AsyncExitStack() as stack:
            nc = await nats.connect(nats_server.url, max_reconnect_attempts=0)
            stack.push_async_callback(nc.close)
            judge = LogprobJudgeRewardWorker(model.base_url, model.model, max_concurrency=4, timeout=120)
            generator = OpenAIWorker(model.base_url, model=model.model, max_concurrency=8, timeout=300)
            for worker, tag in [(generator, "generation"), (judge, "reward")]:
                await stack.enter_async_context(WorkerHost(nc, worker, tags=[tag], subjects=subjects))
            await stack.enter_async_context(
                ControllerService(
                    nc,
                    load_registry(),
                    subjects=subjects,
                    max_jobs=args.concurrency,
                    max_job_seconds=args.job_timeout,
                )
            )
            client = JobClient(nc, subjects=subjects)
            for name in args.methods:
                print(f"running {name} on {len(problems)} problems ...", file=sys.stderr, flush=True)
                summary = await run_method(client, specs[name], problems, args)
                summaries.append(summary)
                print(f"  {summary.correct}/{summary.n} correct in {summary.wall_s:.0f}s", file=sys.stderr, flush=True)
    total = time.monotonic() - wall_started
    header = (
        f"Model: {model.model} ({args.model}) on llama.cpp, {args.threads} threads. "
        f"{len(problems)} problems (seed {args.problem_seed}), max_tokens {args.max_tokens}, "
        f"sampled methods at temperature {args.temperature}, {args.concurrency} jobs in flight; "
        f"total {total:.0f}s."
    )
    print(markdown(summaries, header))
    if args.out:
        data = {
            "args": vars(args),
            "model": model.model,
            "total_s": total,
            "methods": [
                {"label": s.label, "wall_s": s.wall_s, "records": [asdict(r) for r in s.records]} for s in summaries
            ],
        }
        await asyncio.to_thread(Path(args.out).write_text, json.dumps(data, indent=1))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2 (default), qwen-0.5b, or a .gguf path")
    p.add_argument("--limit", type=int, default=40, help="problems to run (a prefix of the set)")
    p.add_argument("--methods", nargs="+", default=["native", "majority_vote", "best_of_n", "dynasor"])
    p.add_argument("--max-tokens", type=int, default=192)
    p.add_argument("--temperature", type=float, default=0.7, help="for sampled methods (vote, best-of-N)")
    p.add_argument("--vote-n", type=int, default=8)
    p.add_argument("--bon-n", type=int, default=4)
    p.add_argument("--chunk-size", type=int, default=32, help="Dynasor tokens between probes")
    p.add_argument("--certainty", type=int, default=2, help="Dynasor: agreeing probes to stop")
    p.add_argument("--concurrency", type=int, default=4, help="jobs in flight")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="sampling seed base")
    p.add_argument("--problem-seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--job-timeout", type=float, default=600.0)
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write per-problem records as JSON here")
    p.add_argument("--verbose", action="store_true", help="one line per finished problem (stderr)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
