"""Early stop of a streamed generation: the building block of Dynasor-CoT and DeepConf online.

``stream_until`` re-yields one ``StreamingGenerationTask`` chunk by chunk and, when a
condition holds, sets ``cancel_flag`` and yields it once more so the runtime closes the
generation at the backend (no tokens are spent after the decision)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from ..proto.tasks import GenerationTask, StreamingGenerationTask, Task, TaskStatus
from ..runtime.context import emit_partial
from ..runtime.controller import Controller, ControllerGen, Output
from .kit.base import derive_generation, fill_unset, require, succeed, validate_sampling

StopCondition = Callable[[StreamingGenerationTask], bool]


def cancel(stream: StreamingGenerationTask) -> Generator[Any, None, None]:
    """Ask the runtime to stop a streamed generation at the backend."""
    if not stream.end_flag:
        stream.cancel_flag = True
        yield [stream]


def stream_until(
    stream: StreamingGenerationTask,
    should_stop: StopCondition,
    *,
    emit: bool = False,
) -> Generator[Any, None, bool]:
    """Run ``stream`` to its end or until ``should_stop`` holds; returns whether it stopped early
    (then the text so far is kept and the task is marked successful)."""
    seen = ""
    while not stream.end_flag:
        yield [stream]
        text = stream.output_str or ""
        if emit:
            emit_partial(text[len(seen) :])
            seen = text
        if not stream.end_flag and stream.status is TaskStatus.PENDING and should_stop(stream):
            yield from cancel(stream)
            stream.status, stream.error = TaskStatus.SUCCESS, None
            stream.finish_reason = "early_stop"
            return True
    return False


class StreamingStopController(Controller):
    """Streams a generation and cancels it once ``stop_condition(text_so_far)`` holds."""

    name = "streaming"

    def __init__(
        self,
        stop_condition: Callable[[str], bool] | None = None,
        *,
        streaming_step: int = 16,
        stream: bool = False,
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        super().__init__()
        require(streaming_step >= 1, "streaming_step", "must be at least 1")
        self.stop_condition = stop_condition or (lambda _text: False)
        self.streaming_step = streaming_step
        self.stream = stream
        self.sampling = validate_sampling(sampling)
        if name is not None:
            self.name = name
        self.stopped_early = False
        self._stream: StreamingGenerationTask | None = None

    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        task = GenerationTask(input_str=prompt)
        yield from self.process([task], **kwargs)
        task.raise_for_status()
        out = Output.from_task(task)
        out.metadata["stopped_early"] = self.stopped_early
        return out

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        stream = derive_generation(caller, StreamingGenerationTask, streaming_step=self.streaming_step)
        fill_unset(stream, self.sampling)
        self._stream = stream
        self.stopped_early = yield from stream_until(
            stream, lambda s: self.stop_condition(s.output_str or ""), emit=self.stream
        )
        caller.copy_results_from(stream)
        if stream.ok:
            succeed(caller, stream.output_str or "")

    def best_so_far(self) -> Output | None:
        if self._stream is None or not self._stream.output_str:
            return None
        return Output(text=self._stream.output_str, metadata={"partial": True})
