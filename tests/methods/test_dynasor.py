from __future__ import annotations

import pytest

from scaffolding_nats.errors import TaskFailed
from scaffolding_nats.methods import DynasorCoTController
from scaffolding_nats.methods.dynasor import PROBE_SUFFIX, is_certain, probe_answer
from scaffolding_nats.proto import GenerationTask, StreamingGenerationTask

from .scripted import ScriptedWorker, run, tokens

LONG = " ".join(f"w{i}" for i in range(40)) + " so \\boxed{42}"


def script(probes: dict[int, str]) -> ScriptedWorker:
    """Streams LONG; a probe answers by how many tokens of thought it was shown."""

    def gen(task: GenerationTask) -> str:
        if isinstance(task, StreamingGenerationTask):
            return LONG
        shown = task.input_str.removeprefix("Q").removesuffix(PROBE_SUFFIX)  # type: ignore[union-attr]
        return probes.get(len(tokens(shown)), "42} done")

    return ScriptedWorker(gen)


def test_probe_parsing_and_certainty() -> None:
    assert probe_answer("42} because") == "42"
    assert probe_answer("\\frac{1}{2}} x") == "\\frac{1}{2}"
    assert probe_answer("no brace") == "no brace"
    assert is_certain(["1", "42", "42.0", "4.2e1"], 3)
    assert not is_certain(["42", "42"], 3)
    assert not is_certain(["42", "wait 42", "42"], 3)
    assert not is_certain(["42", "", "42"], 3)
    assert not is_certain(["Hmm", "hmm", "hmm"], 3)


async def test_early_exit_cancels_stream_and_accounts_probes_apart() -> None:
    worker = script({4: "wait, 41}", 8: "42}"})
    ctl = DynasorCoTController(chunk_size=4, certainty_threshold=3)
    out = await run(ctl, worker, "Q")
    (stream,) = worker.of(StreamingGenerationTask)
    assert stream.streaming_step == 4 and stream.input_str == "Q"
    probes = [t for t in worker.seen if type(t) is GenerationTask]
    assert [
        len(tokens((p.input_str or "").removeprefix("Q").removesuffix(PROBE_SUFFIX))) for p in probes
    ] == [
        4,
        8,
        12,
        16,
    ]
    assert all(p.max_tokens == 20 and (p.input_str or "").endswith(PROBE_SUFFIX) for p in probes)
    assert worker.closed == [worker.opened[0]] and not worker.finished  # cancelled at the backend
    assert out.output.answer == "42"
    assert out.output.text.startswith("w0 w1") and out.output.text.endswith("\\boxed{42}")
    assert out.output.metadata == {"early_exit": True, "chunks": 4, "probes": 4}
    assert set(out.usage_by_controller) == {"dynasor", "probe"}
    assert out.usage_by_controller["dynasor"].completion_tokens == 16
    assert out.usage_by_controller["probe"].completion_tokens == 2 + 1 + 2 + 2


async def test_hesitation_keeps_generating_to_the_end() -> None:
    worker = ScriptedWorker(lambda t: LONG if isinstance(t, StreamingGenerationTask) else "hmm 42}")
    out = await run(DynasorCoTController(chunk_size=16, certainty_threshold=2), worker, "Q")
    assert out.output.metadata["early_exit"] is False
    assert out.output.text == LONG
    assert out.output.answer == "42"
    assert worker.finished and not worker.closed


async def test_stream_failure_is_typed() -> None:
    worker = ScriptedWorker(lambda t: RuntimeError("gpu fell over"))
    with pytest.raises(TaskFailed, match="gpu fell over"):
        await run(DynasorCoTController(chunk_size=4), worker, "Q")


async def test_sampling_overrides_reach_the_stream() -> None:
    worker = script({})
    await run(DynasorCoTController(chunk_size=8, temperature=0.6, max_tokens=100), worker, "Q")
    (stream,) = worker.of(StreamingGenerationTask)
    assert (stream.temperature, stream.max_tokens) == (0.6, 100)


def continuing(probes: dict[int, str]) -> ScriptedWorker:
    """Chunk requests continue LONG from the text they were shown; probes as in ``script``."""

    def gen(task: GenerationTask) -> str:
        text = (task.input_str or "").removeprefix("Q")
        if text.endswith(PROBE_SUFFIX):
            return probes.get(len(tokens(text.removesuffix(PROBE_SUFFIX))), "42} done")
        return "".join(tokens(LONG)[len(tokens(text)) :])

    return ScriptedWorker(gen)


async def test_chunked_requests_probe_between_chunks_and_stop_generating() -> None:
    worker = continuing({4: "wait, 41}", 8: "42}"})
    ctl = DynasorCoTController(chunk_size=4, certainty_threshold=3, continuation="requests")
    out = await run(ctl, worker, "Q", budget=None)
    assert not worker.of(StreamingGenerationTask)  # no open stream to run ahead of the probes
    sent = [t for t in worker.seen if type(t) is GenerationTask]
    chunks = [t for t in sent if not (t.input_str or "").endswith(PROBE_SUFFIX)]
    assert [len(tokens((c.input_str or "")[1:])) for c in chunks] == [0, 4, 8, 12]
    assert all(c.max_tokens == 4 for c in chunks)
    assert out.output.answer == "42" and out.output.metadata["early_exit"] is True
    assert out.usage_by_controller["dynasor"].completion_tokens == 16  # generation stopped at 16 of 42


async def test_chunked_requests_run_to_the_end_within_the_token_limit() -> None:
    worker = continuing({})
    ctl = DynasorCoTController(chunk_size=16, certainty_threshold=9, continuation="requests", max_tokens=40)
    out = await run(ctl, worker, "Q")
    assert out.output.metadata["early_exit"] is False
    assert out.usage_by_controller["dynasor"].completion_tokens == 40
    assert out.output.text == "".join(tokens(LONG)[:40])
