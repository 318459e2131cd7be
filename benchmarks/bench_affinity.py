"""P7: prefix affinity on vs off, through the whole stack, on GSM8K.

Two llama-server replicas (``--replicas``; ``--slots`` each, ``--threads`` each: one core per
replica on this machine), the controller service, a generation worker and a PRM judge worker
whose engine pools span both replicas, over NATS. On each problem, each method runs once with
affinity on (tasks routed by their ``affinity_key`` to the replica holding their prefix, pinned
to its slot) and once off (the least loaded replica, no pin), in an order that alternates from
problem to problem, with the same seed. Before every run both replicas restart, so neither mode
finds the other's cache; the prompt tokens each replica computed are read from its own
``/metrics`` (``llamacpp:prompt_tokens_total``) after the run.

Phases: ``search``, the step-level searches (``beam_search``, ``mcts``, ``best_of_4_prm``) on 2
replicas, affinity routing and slot pinning together; ``route``, routing alone (no slot pins in
either mode); ``vote``, ``majority_vote`` throughput on 2 replicas; ``single``, one replica (slot
pinning alone).

Run: ``make bench-affinity`` or ``python -m benchmarks.bench_affinity --problems 3``. Writes the
raw records (``--out``, JSONL), a markdown summary and an SVG chart beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
import urllib.request
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.datasets import GSM8K, Problem, answer_of, is_correct, load
from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import ModelServer, NatsServer
from scaffolding_nats.devstack.stack import local_stack
from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.proto import Job, SamplingParams, Subjects
from scaffolding_nats.workers import LogprobJudgeRewardWorker, OpenAIWorker
from scaffolding_nats.workers.engine_pool import EngineStats

REPO = Path(__file__).resolve().parents[1]
SEARCH_PARAMS: dict[str, dict[str, Any]] = {
    "beam_search": {"beam_width": 2, "expansions_per_beam": 2, "max_steps": 3, "step_max_tokens": 64},
    "mcts": {"max_depth": 3, "max_iterations": 3, "num_thoughts_per_step": 2, "step_max_tokens": 64},
    "best_of_4_prm": {},
}
"""Bounded versions of the methods' defaults (methods/default_methods.yaml), so a run fits."""
VOTE_PARAMS: dict[str, Any] = {"sample_num": 4}


@dataclass
class Record:
    phase: str
    method: str
    mode: str
    problem: str
    seed: int
    expected: float
    answer: str | None = None
    correct: bool = False
    wall_s: float = 0.0
    engine_prompt_computed: int = 0
    engine_prompt_by_replica: list[int] = field(default_factory=list)
    usage_prompt: int = 0
    usage_cached: int = 0
    completion_tokens: int = 0
    num_tasks: int = 0
    routes: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def engine_prompt_tokens(server: ModelServer) -> int:
    """Prompt tokens the replica computed since it started (its Prometheus endpoint)."""
    url = server.base_url.removesuffix("/v1") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(r"^llamacpp:prompt_tokens_total\s+([0-9.e+]+)", text, re.M)
    return int(float(match.group(1))) if match else 0


class Bench:
    def __init__(self, args: argparse.Namespace, nats: NatsServer) -> None:
        self.args = args
        self.nats = nats
        self.servers = [
            ModelServer(
                args.model, n_ctx=args.n_ctx, n_threads=args.threads, parallel=2 * args.slots, extra_args=["--metrics"]
            )
            for _ in range(args.replicas)
        ]
        self.out = Path(args.out)

    async def restart(self, servers: Sequence[ModelServer]) -> None:
        """Cold caches for the next run: every replica restarts (in parallel)."""
        for s in servers:
            await asyncio.to_thread(s.stop)
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))

    async def phase(
        self,
        phase: str,
        methods: dict[str, dict[str, Any]],
        problems: list[Problem],
        replicas: int,
        *,
        pin: bool = True,
    ) -> None:
        """Every problem x method once per mode; ``on``: affinity routing, and slot pins when
        ``pin``; ``off``: neither (llama-server picks slots and restores prefixes itself)."""
        servers = self.servers[:replicas]
        await self.restart(servers)
        urls, model = [s.base_url for s in servers], servers[0].model
        common: dict[str, Any] = {"max_concurrency": self.args.slots, "timeout": 300, "pin_slots": True}
        gen = OpenAIWorker(urls, model=model, **common)  # pins slots 0 .. slots-1
        judge = LogprobJudgeRewardWorker(urls, model, slot_offset=self.args.slots, **common)  # the others
        subjects = Subjects(f"p7{phase}")
        async with AsyncExitStack() as es:
            up = await es.enter_async_context(
                local_stack(
                    self.nats.url,
                    subjects,
                    [(gen, ["generation"]), (judge, ["reward"])],
                    controller_options={"max_job_seconds": self.args.job_timeout},
                )
            )
            client = JobClient(up.nc, subjects=subjects)
            for i, problem in enumerate(problems):
                for method, params in methods.items():
                    modes = ("off", "on") if i % 2 == 0 else ("on", "off")
                    for mode in modes:
                        await self.restart(servers)
                        for w in (gen, judge):
                            await w.backend.close()  # fresh connections to the fresh replicas
                            w.affinity = mode == "on"
                            w.backend.pool.pin_slots = mode == "on" and pin
                            for e in w.backend.pool.engines:
                                e.forget_cache()
                                e.down_until, e.stats = 0.0, EngineStats()
                        record = await self.run_one(client, phase, method, params, mode, problem, i, servers, gen)
                        self.write(record)

    async def run_one(
        self,
        client: JobClient,
        phase: str,
        method: str,
        params: dict[str, Any],
        mode: str,
        problem: Problem,
        index: int,
        servers: Sequence[ModelServer],
        gen: OpenAIWorker,
    ) -> Record:
        seed = self.args.seed + index
        job = Job(
            method=method,
            params=params,
            messages=[{"role": "user", "content": problem.prompt()}],
            sampling=SamplingParams(max_tokens=self.args.max_tokens, temperature=self.args.temperature, seed=seed),
        )
        rec = Record(phase, method, mode, problem.id, seed, problem.answer)
        started = time.monotonic()
        try:
            result = await client.run(job, timeout=self.args.job_timeout)
        except ScaffoldingError as exc:
            rec.error = f"{exc.code.value}: {exc.message[:200]}"
        else:
            rec.answer = answer_of(result.text, result.answer)
            rec.correct = is_correct(rec.answer, problem.answer)
            rec.usage_prompt, rec.usage_cached = result.usage.prompt_tokens, result.usage.cached_tokens
            rec.completion_tokens, rec.num_tasks = result.usage.completion_tokens, result.num_tasks
        rec.wall_s = time.monotonic() - started
        rec.engine_prompt_by_replica = [await asyncio.to_thread(engine_prompt_tokens, s) for s in servers]
        rec.engine_prompt_computed = sum(rec.engine_prompt_by_replica)
        stats = gen.pool.stats()
        rec.routes = {r: sum(s[r] for s in stats.values()) for r in ("home", "spill", "any")}
        print(
            f"{phase:6} {method:14} {mode:3} {problem.id:14} {rec.wall_s:6.1f}s "
            f"computed {rec.engine_prompt_computed:6d} "
            f"cached {rec.usage_cached:6d}/{rec.usage_prompt:6d} {'ok' if rec.correct else '--'} {rec.error or ''}",
            flush=True,
        )
        return rec

    def write(self, rec: Record) -> None:
        with self.out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(rec)) + "\n")


# -- the summary ----------------------------------------------------------------------------


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (phase, method): on vs off over the problems both modes finished."""
    rows = []
    for phase, method in dict.fromkeys((r["phase"], r["method"]) for r in records):
        by = {(r["mode"], r["problem"]): r for r in records if r["phase"] == phase and r["method"] == method}
        problems = [p for (m, p) in by if m == "on" and ("off", p) in by]
        if not problems:
            continue
        on = [by["on", p] for p in problems]
        off = [by["off", p] for p in problems]
        ok = [not (a["error"] or b["error"]) for a, b in zip(on, off, strict=True)]
        sum_on = sum(r["engine_prompt_computed"] for r in on)
        sum_off = sum(r["engine_prompt_computed"] for r in off)
        wall_on, wall_off = sum(r["wall_s"] for r in on), sum(r["wall_s"] for r in off)
        ratios = [b["wall_s"] / a["wall_s"] for a, b in zip(on, off, strict=True) if a["wall_s"] > 0]
        rows.append(
            {
                "phase": phase,
                "method": method,
                "problems": len(problems),
                "both_ok": sum(ok),
                "prefill_off": sum_off,
                "prefill_on": sum_on,
                "prefill_saved": 1 - sum_on / sum_off if sum_off else 0.0,
                "wall_off": wall_off,
                "wall_on": wall_on,
                "speedup": wall_off / wall_on if wall_on else 0.0,
                "median_speedup": statistics.median(ratios) if ratios else 0.0,
                "acc_off": sum(r["correct"] for r in off),
                "acc_on": sum(r["correct"] for r in on),
                "same_answer": sum(a["answer"] == b["answer"] for a, b in zip(on, off, strict=True)),
                "cached_on": sum(r["usage_cached"] for r in on),
                "prompt_on": sum(r["usage_prompt"] for r in on),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| phase | method | problems | prefill tokens off → on | saved | wall s off → on | speed-up (total / median) "
        "| correct off / on | same answer |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['phase']} | {r['method']} | {r['problems']} | {r['prefill_off']:,} → {r['prefill_on']:,} "
        f"| {r['prefill_saved']:.0%} | {r['wall_off']:.0f} → {r['wall_on']:.0f} "
        f"| {r['speedup']:.2f}x / {r['median_speedup']:.2f}x | {r['acc_off']} / {r['acc_on']} "
        f"| {r['same_answer']}/{r['problems']} |\n"
        for r in rows
    )
    return head + body


def svg(rows: list[dict[str, Any]]) -> str:
    """Two bars per method (off, on) for prefill tokens and for wall time, each scaled to off."""
    width, bar, gap, left = 720, 14, 40, 150
    height = 60 + len(rows) * (4 * bar + gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        '<text x="10" y="20" font-weight="bold">P7: prefix affinity off (grey) vs on (blue), relative to off</text>',
    ]
    y = 40
    ratios = [r[f"{k}_on"] / r[f"{k}_off"] for r in rows for k in ("prefill", "wall") if r[f"{k}_off"]]
    scale = (width - left - 130) / max([1.0, *ratios])  # the longest bar and its label fit
    for r in rows:
        parts.append(f'<text x="10" y="{y + 2 * bar}">{r["phase"]} {r["method"]}</text>')
        for label, off, on, unit in (
            ("prefill", r["prefill_off"], r["prefill_on"], "tok"),
            ("wall", r["wall_off"], r["wall_on"], "s"),
        ):
            for shade, value in (("#aaa", off), ("#3b7dd8", on)):
                w = scale * (value / off if off else 0)
                parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{shade}"/>')
                parts.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}">{label} {value:,.0f} {unit}</text>')
                y += bar
        y += gap
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def report(out: Path) -> None:
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = summarize(records)
    table = markdown(rows)
    vote = [r for r in rows if r["method"] == "majority_vote"]
    extra = "".join(
        f"\nmajority_vote throughput ({r['phase']}): off {r['problems'] / r['wall_off'] * 60:.2f} problems/min, "
        f"on {r['problems'] / r['wall_on'] * 60:.2f} problems/min ({r['speedup'] - 1:+.1%})\n"
        for r in vote
        if r["wall_on"] and r["wall_off"]
    )
    out.with_suffix(".md").write_text(table + extra, encoding="utf-8")
    out.with_suffix(".svg").write_text(svg(rows), encoding="utf-8")
    print(table + extra)


async def main_async(args: argparse.Namespace) -> None:
    problems = load(args.dataset)[args.skip : args.skip + args.problems]
    out = Path(args.out)
    if not args.resume:
        await asyncio.to_thread(out.write_text, "", encoding="utf-8")
    with NatsServer(jetstream=True) as nats:
        bench = Bench(args, nats)
        try:
            if "search" in args.phases:
                methods = {m: SEARCH_PARAMS[m] for m in args.methods.split(",")}
                await bench.phase("search", methods, problems, replicas=args.replicas)
            if "route" in args.phases:  # routing alone: no slot pins in either mode
                methods = {m: SEARCH_PARAMS[m] for m in args.route_methods.split(",")}
                await bench.phase("route", methods, problems, replicas=args.replicas, pin=False)
            if "vote" in args.phases:
                await bench.phase("vote", {"majority_vote": VOTE_PARAMS}, problems[: args.vote_problems], args.replicas)
            if "single" in args.phases:
                await bench.phase(
                    "single", {"beam_search": SEARCH_PARAMS["beam_search"]}, problems[: args.single_problems], 1
                )
        finally:
            for s in bench.servers:
                s.stop()
    report(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=str(GSM8K))
    p.add_argument("--problems", type=int, default=3)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--vote-problems", type=int, default=3)
    p.add_argument("--single-problems", type=int, default=2)
    p.add_argument("--phases", default="search,route,vote,single")
    p.add_argument("--route-methods", default="beam_search,best_of_4_prm")
    p.add_argument("--methods", default="beam_search,mcts,best_of_4_prm")
    p.add_argument("--model", default="qwen-0.5b")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--slots", type=int, default=2, help="slots per replica for each worker (its --parallel: twice)")
    p.add_argument("--threads", type=int, default=1, help="threads per replica (one core each on 2 cores)")
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--job-timeout", type=float, default=600.0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "p7.jsonl"))
    p.add_argument("--resume", action="store_true", help="append to --out instead of starting it afresh")
    p.add_argument("--report", action="store_true", help="only summarize --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        report(Path(args.out))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
