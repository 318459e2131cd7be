"""P8 (batching pays) and P5 (against the peer) on one llama-server, paths interleaved.

One engine (llama.cpp's llama-server, 8 slots, continuous batching), one stack (controller
service and OpenAI worker over NATS, the worker's concurrency equal to the slots), GSM8K
problems; on each problem every path runs once, in an order that rotates, so drift on a shared
machine falls on all paths alike:

* P8: ``chat`` (one sample) against ``majority_vote`` and ``weighted_vote`` (8 samples each, the
  methods' defaults): wall time ratios, goals ≤ 2.5x and ≤ 1.15x majority_vote.
* P5: the system's self-consistency@5 against optillm 0.4's ``self_consistency`` (its own code,
  ``AdvancedSelfConsistency``: 5 chat requests one after another at temperature 1, answers
  clustered by text similarity), the same prompt, temperature and token limit: problems per
  minute (goal ≥ 1.5x) at accuracy no worse.

optillm's proxy server pulls in torch, transformers and gradio; its self-consistency approach
needs none of them, so ``make bench-batching`` installs the wheel alone (``--no-deps``, into
``.venv/peer``) and this benchmark imports that one module without running the package's
``__init__`` (which starts importing the server).

Run: ``make bench-batching`` or ``python -m benchmarks.bench_batching --problems 8``.
Writes per-problem records (``--out``, JSONL) and prints the tables the README quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
import types
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from benchmarks.datasets import GSM8K, Problem, answer_of, is_correct, load
from benchmarks.stats import paired, wilson
from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import ModelServer, NatsServer
from scaffolding_nats.devstack.stack import local_stack
from scaffolding_nats.proto import Job, SamplingParams, Subjects
from scaffolding_nats.proto.tasks import ChatMessage
from scaffolding_nats.workers import OpenAIWorker

REPO = Path(__file__).resolve().parents[1]
PEER_DIR = REPO / ".venv" / "peer"

Run = Callable[[Problem, int], Awaitable[tuple[str | None, int]]]
"""(problem, seed) -> (answer, completion tokens)."""


@dataclass
class Lane:
    label: str
    run: Run
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)


class CountingClient:
    """The peer's OpenAI client, counting the completion tokens of every response (optillm
    leaves truncated samples out of its own count, though the server generated them)."""

    def __init__(self, client: openai.OpenAI) -> None:
        self.completion_tokens = 0
        self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=self._create))
        self._client = client

    def _create(self, **kwargs: Any) -> Any:
        response = self._client.chat.completions.create(**kwargs)
        self.completion_tokens += response.usage.completion_tokens if response.usage else 0
        return response


def optillm_self_consistency() -> Any:
    """optillm's ``advanced_self_consistency_approach``, from the wheel in ``.venv/peer``."""
    if not (PEER_DIR / "optillm" / "self_consistency.py").is_file():
        raise SystemExit(
            f"optillm is not in {PEER_DIR}: run `make bench-batching` (pip install --no-deps optillm==0.4.0)"
        )
    package = types.ModuleType("optillm")
    package.__path__ = [str(PEER_DIR / "optillm")]
    package.conversation_logger = None  # type: ignore[attr-defined]
    sys.modules.setdefault("optillm", package)
    sys.modules.setdefault("optillm.conversation_logger", types.ModuleType("optillm.conversation_logger"))
    return importlib.import_module("optillm.self_consistency").advanced_self_consistency_approach


async def main(args: argparse.Namespace) -> int:
    problems = load(args.data)[args.start : args.start + args.problems]
    records = []
    with NatsServer(jetstream=True) as nats_server:
        model = ModelServer(args.model, n_ctx=args.n_ctx, n_threads=args.threads, parallel=args.slots,
                            startup_timeout=180)  # fmt: skip
        async with model, AsyncExitStack() as stack:
            subjects = Subjects("p8")
            worker = OpenAIWorker(model.base_url, model=model.model, max_concurrency=args.slots, stream_plain=False,
                                  timeout=900)  # fmt: skip
            connect = {"max_reconnect_attempts": 0}
            up = await stack.enter_async_context(
                local_stack(nats_server.url, subjects, [(worker, ["generation"])], connect_options=connect)
            )
            client = JobClient(up.nc, subjects=subjects)

            def system(method: str, params: dict[str, Any], temperature: float | None = None) -> Run:
                async def run(problem: Problem, seed: int) -> tuple[str | None, int]:
                    job = Job(
                        method=method,
                        messages=[ChatMessage(role="user", content=problem.prompt())],
                        params=params,
                        sampling=SamplingParams(max_tokens=args.max_tokens, temperature=temperature, seed=seed),
                    )
                    result = await client.run(job, timeout=1800)
                    return answer_of(result.text, result.answer), result.usage.completion_tokens

                return run

            approach = optillm_self_consistency() if args.peer else None
            sync_client = openai.OpenAI(base_url=model.base_url, api_key="none", timeout=900)

            async def peer(problem: Problem, seed: int) -> tuple[str | None, int]:
                counting = CountingClient(sync_client)  # optillm counts only the samples it keeps
                text, _ = await asyncio.to_thread(
                    approach, "", problem.prompt(), counting, model.model, {"max_tokens": args.max_tokens}
                )
                return answer_of(text), counting.completion_tokens

            lanes = [
                Lane("chat (1 sample)", system("chat", {})),
                Lane("majority_vote (8)", system("majority_vote", {})),
                Lane("weighted_vote (8)", system("weighted_vote", {})),
            ]
            if args.peer:
                lanes += [
                    Lane("self-consistency@5, system (T=1)", system("self_consistency", {"sample_num": 5}, 1.0)),
                    Lane("optillm 0.4 self_consistency (5, T=1)", peer),
                ]
            for i, problem in enumerate(problems):
                order = lanes[i % len(lanes) :] + lanes[: i % len(lanes)]
                for lane in order:
                    started = time.perf_counter()
                    answer, tokens = await lane.run(problem, args.seed + i)
                    lane.seconds.append(time.perf_counter() - started)
                    lane.tokens.append(tokens)
                    lane.correct.append(is_correct(answer, problem.answer))
                    records.append({"problem": problem.id, "lane": lane.label, "seconds": lane.seconds[-1],
                                    "tokens": tokens, "answer": answer, "expected": problem.answer,
                                    "correct": lane.correct[-1]})  # fmt: skip
                    print(f"  {problem.id} {lane.label}: {lane.seconds[-1]:.1f}s, {tokens} tok, {answer!r} "
                          f"({'right' if lane.correct[-1] else 'wrong'})", file=sys.stderr, flush=True)  # fmt: skip
            sync_client.close()
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, "".join(json.dumps(r) + "\n" for r in records))
    print(report(lanes, args, len(problems)))
    return 0


def report(lanes: list[Lane], args: argparse.Namespace, n: int) -> str:
    by = {lane.label: lane for lane in lanes}
    chat, vote = by["chat (1 sample)"], by["majority_vote (8)"]
    lines = [
        f"{args.model} on llama-server ({args.slots} slots, {args.threads} threads), {n} GSM8K problems "
        f"(train400 #{args.start}..), max_tokens {args.max_tokens}, job seed {args.seed}+i, lanes interleaved.",
        "",
        "| lane | accuracy (95 % CI) | tokens / problem | wall s / problem | wall vs chat | problems / min |",
        "|---|---|---|---|---|---|",
    ]
    for lane in lanes:
        k = sum(lane.correct)
        lo, hi = wilson(k, n)
        wall = sum(lane.seconds) / n
        lines.append(
            f"| {lane.label} | {k}/{n} ({lo:.0%}-{hi:.0%}) | {sum(lane.tokens) / n:.0f} | {wall:.1f} "
            f"| {sum(lane.seconds) / sum(chat.seconds):.2f}x | {60 / wall:.2f} |"
        )
    weighted = by["weighted_vote (8)"]
    lines += [
        "",
        f"P8: majority_vote / chat = {sum(vote.seconds) / sum(chat.seconds):.2f}x wall (goal ≤ 2.5x); "
        f"weighted_vote / majority_vote = {sum(weighted.seconds) / sum(vote.seconds):.2f}x (goal ≤ 1.15x); "
        f"majority_vote's slowest problem {max(vote.seconds):.0f} s, median "
        f"{sorted(vote.seconds)[n // 2]:.0f} s (goal ≤ 60 s).",
    ]
    if args.peer:
        ours, theirs = by["self-consistency@5, system (T=1)"], by["optillm 0.4 self_consistency (5, T=1)"]
        p = paired(theirs.correct, ours.correct)
        lines.append(
            f"P5: problems per minute, system / optillm = {sum(theirs.seconds) / sum(ours.seconds):.2f}x "
            f"(goal ≥ 1.5x); accuracy {sum(ours.correct)}/{n} vs {sum(theirs.correct)}/{n} "
            f"(only optillm {p.only_a}, only the system {p.only_b}, McNemar p = {p.p_value:.2f})."
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen-0.5b")
    p.add_argument("--data", default=str(GSM8K))
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--n-ctx", type=int, default=4096, help="tokens per slot")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--no-peer", dest="peer", action="store_false", help="P8 only")
    p.add_argument("--out", default="", help="per-problem records (JSONL)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
