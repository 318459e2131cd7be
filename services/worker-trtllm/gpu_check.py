"""Checks of TrtLlmWorker on a real GPU: what the tests' stand-in engine cannot prove.

    python services/worker-trtllm/gpu_check.py --model /models/Qwen2.5-0.5B-Instruct
    # in the worker image (it carries this file):
    docker run --rm --gpus all -v "$MODEL_DIR:/models/model:ro" --entrypoint python \\
        scaffolding-nats/worker-trtllm:0.1.0 /opt/scaffolding/gpu_check.py --model /models/model

Prints one line per check (``PASS``/``FAIL`` name: what was seen) and exits 1 if any failed.
No NATS: the worker runs in this process, as the worker service runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

try:
    import scaffolding_nats  # noqa: F401 - installed (the image), else this checkout's src/
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from scaffolding_nats.proto import GenerationTask, StreamingGenerationTask, TaskStatus
from scaffolding_nats.workers.trtllm_worker import TrtLlmWorker

PROMPT = "Write one sentence about the sea."
COUNT = "Count from 1 to 5000, separated by commas: 1, 2, 3,"
DEFAULT_MAX_TOKENS = 96  # the worker's default in these checks: more than the engine's own 32
LONG = 4000  # a request that would run for many seconds unless aborted
CHECK_TIMEOUT_S = 180.0
Result = tuple[bool, str]


class Recorder:
    """Keeps the engine's result objects, to see what happened on the GPU after an abort."""

    def __init__(self, llm: Any) -> None:
        self.results: list[Any] = []
        self._submit = llm.generate_async
        llm.generate_async = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self._submit(*args, **kwargs)
        self.results.append(result)
        return result


async def diversity(worker: TrtLlmWorker, _: Recorder) -> Result:
    tasks = [GenerationTask(input_str=PROMPT, temperature=0.8, max_tokens=48) for _ in range(8)]
    await asyncio.gather(*(worker.run_task(t) for t in tasks))
    failed = [t.error.message if t.error else t.status.value for t in tasks if not t.ok]
    distinct = len({t.output_str for t in tasks})
    detail = f"{distinct} distinct of 8 at T=0.8, no seed" + (f"; {failed[0]}" if failed else "")
    return not failed and distinct >= 4, detail


async def n_choices(worker: TrtLlmWorker, _: Recorder) -> Result:
    task = GenerationTask(input_str=PROMPT, temperature=0.8, max_tokens=48, n=4)
    await worker.run_task(task)
    if not task.ok:
        return False, f"n=4: {task.error.message if task.error else task.status.value}"
    texts = [c.text for c in task.choices or []]
    return len(texts) == 4 and len(set(texts)) >= 2, f"n=4: {len(texts)} choices, {len(set(texts))} distinct"


async def seeded(worker: TrtLlmWorker, _: Recorder) -> Result:
    tasks = [GenerationTask(input_str=PROMPT, temperature=0.8, max_tokens=48, seed=1234) for _ in range(2)]
    for task in tasks:
        await worker.run_task(task)
    if worker.sampler == "TorchSampler":
        ok = all(t.status is TaskStatus.NOT_SUPPORTED for t in tasks)
        return ok, "a seed is refused on the TorchSampler (it ignores it)"
    same = tasks[0].ok and tasks[0].output_str == tasks[1].output_str
    return same, "seed 1234 twice: " + ("the same text" if same else "different texts")


async def no_max_tokens(worker: TrtLlmWorker, _: Recorder) -> Result:
    task = GenerationTask(input_str=COUNT, temperature=0, ignore_eos=True)
    await worker.run_task(task)
    got = task.usage.completion_tokens if task.usage else 0
    ok = task.ok and got == worker.default_max_tokens
    return ok, f"no max_tokens: {got} tokens (worker default {worker.default_max_tokens}, engine's 32)"


async def stream_abort(worker: TrtLlmWorker, recorder: Recorder) -> Result:
    task = StreamingGenerationTask(input_str=COUNT, temperature=0, ignore_eos=True, max_tokens=LONG)
    async with contextlib.aclosing(cast(AsyncGenerator[int, None], worker.stream_task(task))) as chunks:
        async for _ in chunks:
            if len(task.output_tokens or []) >= 16:
                break
    return await _stopped_early(recorder.results[-1], "stream closed after 16 tokens")


async def plain_cancel(worker: TrtLlmWorker, recorder: Recorder) -> Result:
    task = GenerationTask(input_str=COUNT, temperature=0, ignore_eos=True, max_tokens=LONG)
    running = asyncio.ensure_future(worker.run_task(task))
    await asyncio.sleep(1.0)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    return await _stopped_early(recorder.results[-1], "plain request cancelled after 1 s")


async def _stopped_early(result: Any, what: str) -> Result:
    """The engine's own result must end, short of ``LONG`` tokens, soon after the abort."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(result, 30)
    except TimeoutError:
        return False, f"{what}: the request still runs 30 s later"
    out = result.outputs[0]
    tokens, waited = len(out.token_ids), time.perf_counter() - started
    return tokens < LONG, f"{what}: ended after {tokens} of {LONG} tokens ({out.finish_reason}, {waited:.1f} s later)"


async def logprobs_shape(worker: TrtLlmWorker, _: Recorder) -> Result:
    task = GenerationTask(input_str=PROMPT, temperature=0.8, max_tokens=16, num_logprobs=2)
    await worker.run_task(task)
    if not task.ok:
        return False, f"logprobs=2: {task.error.message if task.error else task.status.value}"
    entries, tokens = task.logprobs or [], task.output_tokens or []
    tops = [len(e.top or []) for e in entries]
    ordered = all(
        e.top and e.top[0].logprob >= e.top[-1].logprob and e.logprob <= e.top[0].logprob + 1e-3 and e.logprob <= 0
        for e in entries
    )
    ok = len(entries) == len(tokens) > 0 and set(tops) == {2} and ordered
    return ok, f"logprobs=2: {len(entries)} entries for {len(tokens)} tokens, alternatives: {sorted(set(tops))}"


CHECKS: list[tuple[str, Callable[[TrtLlmWorker, Recorder], Awaitable[Result]]]] = [
    ("diversity", diversity),
    ("n_choices", n_choices),
    ("seeded", seeded),
    ("no_max_tokens", no_max_tokens),
    ("stream_abort", stream_abort),
    ("plain_cancel", plain_cancel),
    ("logprobs_shape", logprobs_shape),
]


async def run_checks(worker: TrtLlmWorker) -> list[tuple[str, bool, str]]:
    """Each check on a started worker, each with its own deadline; a crash is a failure."""
    recorder = Recorder(worker.llm)
    outcomes = []
    for name, check in CHECKS:
        try:
            ok, detail = await asyncio.wait_for(check(worker, recorder), CHECK_TIMEOUT_S)
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        outcomes.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return outcomes


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a Hugging Face folder, or an engine directory (--backend tensorrt)")
    p.add_argument("--backend", default="pytorch", choices=["pytorch", "tensorrt"])
    p.add_argument("--sampler", default="TRTLLMSampler", choices=["TRTLLMSampler", "TorchSampler"])
    p.add_argument("--worker-args", default="{}", help="more TrtLlmWorker/LLM keywords as JSON, e.g. max_seq_len")
    args = p.parse_args(argv)
    extra = {"max_concurrency": 16, **json.loads(args.worker_args)}
    worker = TrtLlmWorker(
        args.model, backend=args.backend, sampler=args.sampler, default_max_tokens=DEFAULT_MAX_TOKENS, **extra
    )
    try:
        await worker.start()
    except Exception as exc:
        print(f"FAIL start: {type(exc).__name__}: {exc}", flush=True)
        return 1
    try:
        outcomes = await run_checks(worker)
    finally:
        await worker.stop()
    return 0 if all(ok for _, ok, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
