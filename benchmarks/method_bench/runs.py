"""Running the benchmark: one job per (problem, method) through ``JobClient``, each result a
``Record``, appended to the JSONL as it lands (``--resume`` skips what it holds)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.datasets import Problem, answer_of, is_correct
from scaffolding_nats.client import JobClient
from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.proto import Job, SamplingParams

from .specs import MethodSpec


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
    index: int | None = None
    """The problem's position in the data file (its job seed is ``seed + index``)."""
    split: str | None = None
    commit: str | None = None
    """The configuration's git commit (``+dirty`` when the checkout had changes)."""
    config: dict[str, Any] = field(default_factory=dict)


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
    stamp = {"index": index, "split": getattr(args, "split", None), "commit": getattr(args, "commit", None),
             "config": getattr(args, "config", {})}  # fmt: skip
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
            wall_s=time.monotonic() - started, error=f"{exc.code.value}: {exc.message[:200]}", **stamp,
        )  # fmt: skip
    answer = answer_of(result.text, result.answer)
    keys = (
        "early_exit", "probes", "votes", "answers", "weights", "score", "scores", "index", "fallback",
        "num_answered", "trace_confidences", "stopped_early", "traces_started", "consensus_reached",
        "num_samples", "waves", "stop", "samples_saved", "confidence", "cot_answers", "program_answers",
        "agreement", "degraded",
    )  # fmt: skip
    extra = {k: result.metadata[k] for k in keys if k in result.metadata}
    if lacks_logprobs(extra):  # a weighted method that silently weighted nothing is no result
        return Record(
            spec.key, spec.label, problem.id, problem.answer, answer, False,
            wall_s=time.monotonic() - started, error="the backend returned no log-probs", extra=extra, **stamp,
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
        **stamp,
    )


def read_records(path: Path) -> list[Record]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(Record(**json.loads(line)))
    return out


def check_frozen(records: Sequence[Record], args: argparse.Namespace) -> None:
    """A resumed run must be the configuration its file was started with (held-out figures
    are one frozen configuration, possibly run over several sessions): the same split and
    the same model, sampling, temperature, token limit and seeds. Refuses otherwise."""
    now = {"split": getattr(args, "split", None), **getattr(args, "config", {})}
    for r in records:
        was = {"split": r.split, **r.config}
        differ = sorted(k for k in now.keys() & was.keys() if now[k] != was[k])
        if differ:
            raise SystemExit(
                f"--resume: {r.method} on {r.problem} in {args.out} ran with "
                + ", ".join(f"{k}={was[k]!r}" for k in differ)
                + "; this run has "
                + ", ".join(f"{k}={now[k]!r}" for k in differ)
                + ". A frozen configuration is not changed half way: use another --out."
            )


async def run_all(
    client: JobClient,
    specs: Sequence[MethodSpec],
    problems: Sequence[Problem],
    args: argparse.Namespace,
    first_index: int = 0,
) -> None:
    """Every (problem, method) pair not done yet, problem by problem, ``--concurrency`` jobs in
    flight; each record is appended to ``--out`` as it lands."""
    from tqdm import tqdm

    out = Path(args.out) if args.out else None
    skip: set[tuple[str, str]] = set()
    if args.resume and out is not None and out.exists():
        held = read_records(out)
        check_frozen(held, args)
        skip = {(r.method, r.problem) for r in held}
    if out is not None and not args.resume:
        out.write_text("", encoding="utf-8")
    todo = [(first_index + i, p, s) for i, p in enumerate(problems) for s in specs if (s.key, p.id) not in skip]
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
        bar.set_postfix_str(" ".join(f"{k}={sum(v)}/{len(v)}" for k, v in correct.items() if v), refresh=False)
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
