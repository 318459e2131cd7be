"""Accuracy and cost of methods on real maths (GSM8K), through the whole distributed stack.

The script starts its own stack on free loopback ports: nats-server (JetStream), llama.cpp
serving the model, a generation worker, a judge reward worker (the same model's Yes/No
log-probs), a tools worker (``python`` for program-aided voting) and the controller service.
Each problem becomes one job per method, submitted with ``JobClient`` as any client would;
the methods run interleaved problem by problem, so a stopped run still compares them on the
same problems, and ``--resume`` carries on where the JSONL stops.

The protocol (``--split``): GSM8K's 400-problem slice is cut in two halves. ``dev`` (#0-199)
is for choosing anything (sampling, rules, thresholds); ``heldout`` (#200-399) runs each method
configuration once, after it is frozen; the README reports held-out figures only. Every record
carries the configuration's git commit, its split and the sampling it ran with.

Reported per method: accuracy with a 95% Wilson interval; the paired comparison with greedy
on the same problems (problems only one of them got right, exact McNemar p); for multi-sample
methods the oracle (any sample right), per-sample accuracy and the answer spread; completion
tokens, wall seconds and tasks per problem. Writes the raw per-problem JSONL (``--out``), a
Markdown table (``--markdown``) and a chart of accuracy against tokens (``--chart``).

Run (from the checkout; ``make model-qwen`` first):
``python -m benchmarks.bench_methods --split heldout --limit 100 --methods greedy vote8 adaptive_vote``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.datasets import GSM8K, load
from benchmarks.method_bench.report import report
from benchmarks.method_bench.runs import run_all
from benchmarks.method_bench.specs import method_specs
from scaffolding_nats.client import JobClient
from scaffolding_nats.proto import Subjects

SPLITS = {"dev": (0, 200), "heldout": (200, 400), "all": (0, None)}
"""The halves of the 400-problem slice: tune on ``dev``, report ``heldout``."""


def git_commit() -> str | None:
    """The checkout's commit, ``+dirty`` when tracked files (results aside) differ from it."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    try:
        def git(*cmd: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True, timeout=10)

        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def sampling_config(args: argparse.Namespace, alias: str) -> dict[str, Any]:
    """The worker's sampling defaults: the model's own (``model``), none (``engine``: the
    engine's defaults) or a JSON object."""
    import json

    from scaffolding_nats.devstack.model_files import sampling_defaults

    if args.sampling == "model":
        return sampling_defaults(alias)
    if args.sampling == "engine":
        return {}
    value = json.loads(args.sampling)
    if not isinstance(value, dict):
        raise SystemExit("--sampling takes model, engine or a JSON object")
    return value


def select(problems: list[Any], args: argparse.Namespace) -> tuple[list[Any], int]:
    """The problems of ``--split`` from ``--offset`` (within the split), ``--limit`` of them,
    and the file position of the first (job seeds follow file positions)."""
    lo, hi = SPLITS[args.split]
    half = problems[lo:hi]
    return half[args.offset : args.offset + args.limit], lo + args.offset


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
    from scaffolding_nats.devstack import ModelServer, NatsServer
    from scaffolding_nats.devstack.stack import local_stack
    from scaffolding_nats.workers import LogprobJudgeRewardWorker, OpenAIWorker

    all_specs = method_specs(args)
    unknown = [m for m in args.methods if m not in all_specs]
    if unknown:
        print(f"unknown methods {unknown}; choose from {sorted(all_specs)}", file=sys.stderr)
        return 2
    specs = [all_specs[m] for m in args.methods]
    problems, first = select(load(args.data), args)
    args.commit = git_commit()
    header = (
        f"Model: {args.model} on llama-server ({args.parallel} slots), {args.threads} threads. "
        f"{len(problems)} problems of {Path(args.data).name} ({args.split} split) from #{first}, "
        f"max_tokens {args.max_tokens}, sampled methods at temperature {args.temperature}, "
        f"worker sampling defaults: {args.sampling}, "
        f"job seed {args.seed}+i, {args.concurrency} jobs in flight. Commit {args.commit}."
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
        async with model:
            # A request waits in llama.cpp's queue behind the others: an unstreamed one gets no
            # byte until it is done, so the read timeout must cover the whole job.
            defaults = sampling_config(args, model.model)
            args.config = {"model": model.model, "sampling_defaults": defaults, "temperature": args.temperature,
                           "max_tokens": args.max_tokens, "seed": args.seed}  # fmt: skip
            generator = OpenAIWorker(
                model.base_url,
                model=model.model,
                max_concurrency=max(8, args.parallel),
                timeout=args.job_timeout,
                stream_plain=args.stream_plain,
                sampling_defaults=defaults,
            )
            workers: list[tuple[Any, list[str]]] = [(generator, ["generation"])]
            if any("reward" in s.needs for s in specs):
                judge = LogprobJudgeRewardWorker(
                    model.base_url, model.model, max_concurrency=4, timeout=args.job_timeout
                )
                workers.append((judge, ["reward"]))
            if any("python" in s.needs for s in specs):
                workers.append((await tools_worker(args), ["tool_call"]))
            controller = {
                "max_jobs": args.concurrency,
                "max_job_seconds": args.job_timeout,
                "task_timeout": args.job_timeout,  # a sample may wait long in llama.cpp's queue
            }
            async with local_stack(
                nats_server.url,
                subjects,
                workers,
                controller_options=controller,
                connect_options={"max_reconnect_attempts": 0},
            ) as stack:
                await run_all(JobClient(stack.nc, subjects=subjects), specs, problems, args, first)
    print(f"ran in {time.monotonic() - started:.0f}s", file=sys.stderr)
    print(report(specs, problems, args, header))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen-0.5b", help="qwen-0.5b (default), smollm2, or a .gguf path")
    p.add_argument("--data", default=str(GSM8K), help="JSONL with question/answer, or 'synthetic'")
    p.add_argument("--split", choices=sorted(SPLITS), default="dev", help="dev #0-199, heldout #200-399")
    p.add_argument("--limit", type=int, default=100, help="problems to run (from --offset)")
    p.add_argument("--offset", type=int, default=0, help="first problem, counted within the split")
    p.add_argument("--sampling", default="model", help="worker sampling defaults: model (default), engine, or JSON")
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
