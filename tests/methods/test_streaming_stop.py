from __future__ import annotations

from typing import Any

from scaffolding_nats.methods import StreamingStopController
from scaffolding_nats.proto import StreamingGenerationTask

from .scripted import ScriptedWorker, run


async def test_stops_and_cancels_at_backend_when_condition_holds() -> None:
    worker = ScriptedWorker(lambda t: "a b STOP c d e f g h")
    events: list[tuple[str, dict[str, Any]]] = []
    ctl = StreamingStopController(lambda text: "STOP" in text, streaming_step=2, stream=True, max_tokens=50)
    out = await run(ctl, worker, "p", events=events)
    assert out.output.text == "a b STOP c"
    assert out.output.metadata["stopped_early"] is True
    assert out.output.finish_reason == "early_stop"
    (task,) = worker.of(StreamingGenerationTask)
    assert (task.streaming_step, task.max_tokens) == (2, 50)
    assert worker.closed == [worker.opened[0]] and not worker.finished
    assert [p["text"] for k, p in events if k == "partial"] == ["a b", " STOP c"]
    assert out.usage.completion_tokens == 4


async def test_runs_to_end_when_condition_never_holds() -> None:
    worker = ScriptedWorker(lambda t: "a b c")
    out = await run(StreamingStopController(lambda text: False, streaming_step=2), worker, "p")
    assert out.output.text == "a b c"
    assert out.output.metadata["stopped_early"] is False
    assert worker.finished and not worker.closed
