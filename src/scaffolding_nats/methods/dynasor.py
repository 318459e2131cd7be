"""Dynasor-CoT: stop a long chain of thought once the model's answer has stabilised.

The generation streams in chunks of ``chunk_size`` tokens (one task, re-yielded). After each
chunk a short probe asks for the final answer given the text so far; when the last
``certainty_threshold`` probes agree and none hesitates, the stream is cancelled at the backend
and the probed answer is appended. Probes run under their own controller label ("probe").

``continuation="requests"`` sends each chunk as its own request continuing the text so far
instead of one open stream. A backend that serialises requests (llama.cpp's server) keeps
generating an open stream ahead of the reader and runs the probe only after it: there an early
exit saves nothing, and the probes wait for the whole trace. With requests, the probe runs
between chunks and an early exit stops the generation (llama.cpp reuses the shared prefix)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from ..proto.tasks import GenerationTask, StreamingGenerationTask, Task, TaskStatus, Usage
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output, ParallelProcess
from .kit.answers import Extractor, get_extractor, normalize_answer
from .kit.base import (
    MethodController,
    Slot,
    derive_generation,
    fill_unset,
    job_default,
    mix_seed,
    prompt_of,
    require,
    set_method_result,
    succeed,
    validate_sampling,
)
from .kit.results import EarlyExitOutcome
from .native import NativeGenerationController
from .streaming_stop import cancel

PROBE_SUFFIX = "... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\boxed{"
HESITATION_WORDS = ("wait", "hold", "but", "okay", "no", "hmm")
DEFAULT_TOKEN_LIMIT = 4096
"""Tokens a chunked continuation stops at when neither the task nor the job sets max_tokens."""


def probe_answer(text: str) -> str:
    """The probe continues "\\boxed{": its answer is what comes before the closing brace."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return text[:i].strip()
            depth -= 1
    return text.strip()


def hesitates(answer: str, words: Sequence[str] = HESITATION_WORDS) -> bool:
    lowered = answer.lower()
    return any(re.search(rf"\b{re.escape(w)}\b", lowered) for w in words)


def is_certain(answers: Sequence[str], k: int, words: Sequence[str] = HESITATION_WORDS) -> bool:
    """The last ``k`` probe answers are non-empty, equal, and free of hesitation."""
    if len(answers) < k:
        return False
    last = answers[-k:]
    if any(not a or hesitates(a, words) for a in last):
        return False
    return len({normalize_answer(a) for a in last}) == 1


class DynasorCoTController(MethodController):
    """Chunked generation with certainty probes and early exit (Dynasor-CoT)."""

    name = "dynasor"
    kind = "dynasor"
    slots = {"probe": Slot("probe_controller")}

    def __init__(
        self,
        *,
        chunk_size: int = 64,
        certainty_threshold: int = 3,
        probe_max_tokens: int = 20,
        probe_suffix: str = PROBE_SUFFIX,
        hesitation_words: Sequence[str] = HESITATION_WORDS,
        probe_controller: Controller | None = None,
        extractor: str | Extractor | None = "default",
        continuation: Literal["stream", "requests"] = "stream",
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        require(chunk_size >= 1, "chunk_size", "must be at least 1")
        require(certainty_threshold >= 1, "certainty_threshold", "must be at least 1")
        require(probe_max_tokens >= 1, "probe_max_tokens", "must be at least 1")
        super().__init__(name)
        self.chunk_size = chunk_size
        self.certainty_threshold = certainty_threshold
        self.probe_max_tokens = probe_max_tokens
        self.probe_suffix = probe_suffix
        self.hesitation_words = tuple(hesitation_words)
        self.probe_controller = probe_controller or NativeGenerationController(name="probe")
        self.extractor = get_extractor(extractor)
        self.sampling = validate_sampling(sampling)
        self.continuation = continuation
        self.probe_answers: list[str] = []
        self._stream: StreamingGenerationTask | None = None
        self._limit = DEFAULT_TOKEN_LIMIT

    def _finalize(self, text: str, answer: str) -> str:
        return f"{text}\n\n**Final Answer**\n\n\\boxed{{{answer}}}"

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        prompt = prompt_of(caller)
        self.probe_answers, self._output = [], None
        stream = derive_generation(caller, StreamingGenerationTask, streaming_step=self.chunk_size)
        fill_unset(stream, self.sampling)
        self._stream = stream
        self._limit = stream.max_tokens or job_default("max_tokens") or DEFAULT_TOKEN_LIMIT
        chunks = 0
        early = False
        while not stream.end_flag:
            yield from self._advance(stream, prompt, chunks)
            chunks += 1
            if stream.end_flag:
                break
            probe = GenerationTask(
                input_str=prompt + (stream.output_str or "") + self.probe_suffix,
                max_tokens=self.probe_max_tokens,
                seed=stream.seed,
                worker_tag=stream.worker_tag,
            )
            yield ParallelProcess([self.probe_controller], [[probe]])
            self.probe_answers.append(probe_answer(probe.output_str or "") if probe.ok else "")
            if is_certain(self.probe_answers, self.certainty_threshold, self.hesitation_words):
                if self.continuation == "stream":
                    yield from cancel(stream)
                early = True
                break
        outcome = EarlyExitOutcome(early_exit=early, chunks=chunks, probes=len(self.probe_answers))
        meta = outcome.to_metadata()
        emit_progress(method=self.label, **meta)
        text = stream.output_str or ""
        if early:
            answer: str | None = self.probe_answers[-1]
            text = self._finalize(text, self.probe_answers[-1])
            succeed(caller, text, usage=stream.usage, finish_reason="early_stop")
        else:
            caller.copy_results_from(stream)
            if not caller.ok:
                return
            answer = self.extractor(text)
        set_method_result(caller, answer, **meta)
        self._output = Output(
            text=text, answer=answer, finish_reason=getattr(caller, "finish_reason", None), result=outcome
        )

    def _advance(self, stream: StreamingGenerationTask, prompt: str, index: int) -> ControllerGen:
        """The next chunk: the open stream's next tokens, or (``continuation="requests"``) one
        request continuing the text so far, whose result is appended to ``stream``."""
        if self.continuation == "stream":
            yield [stream]
            return
        used = stream.usage.completion_tokens if stream.usage else 0
        chunk = derive_generation(
            stream,
            input_str=prompt + (stream.output_str or ""),
            max_tokens=max(1, min(self.chunk_size, self._limit - used)),
            seed=mix_seed(stream.seed, index) if stream.seed is not None else None,
        )
        yield [chunk]
        if not chunk.ok:
            stream.status, stream.error, stream.end_flag = chunk.status, chunk.error, True
            return
        stream.output_str = (stream.output_str or "") + (chunk.output_str or "")
        stream.usage = (stream.usage or Usage()) + (chunk.usage or Usage())
        stream.finish_reason = chunk.finish_reason
        stream.status, stream.error = TaskStatus.SUCCESS, None
        stream.end_flag = chunk.finish_reason != "length" or stream.usage.completion_tokens >= self._limit

    def _partial(self) -> Output | None:
        """The text so far, closed with the latest probe answer when there is one."""
        if self._stream is None:
            return None
        text = self._stream.output_str or ""
        answer = next((a for a in reversed(self.probe_answers) if a), None)
        if answer is None and not text:
            return None
        if answer is not None:
            text = self._finalize(text, answer)
        return Output(text=text, answer=answer or self.extractor(text), metadata={"partial": True})
