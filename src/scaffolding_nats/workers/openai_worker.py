"""A worker for any OpenAI-compatible server (vLLM, trtllm-serve, llama.cpp, OpenAI itself)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import openai

from ..devstack.model_files import sampling_defaults as model_sampling
from ..proto.tasks import (
    ChatTask,
    GenerationTask,
    SamplingParams,
    StreamingChatTask,
    StreamingGenerationTask,
    Task,
)
from ..runtime.fanout import gather_or_cancel
from ..runtime.worker import Worker, handles, streams
from .engine_pool import EnginePool, Lease
from .errors import BackendError, NotSupported
from .openai_backend import OpenAIBackend
from .openai_errors import BACKEND_EXCEPTIONS, ENGINE_GONE, bad_body, with_choices
from .openai_params import chat_params, completion_params
from .openai_results import StreamAccumulator

Feed = Callable[[StreamAccumulator, Any], int]
Api = Callable[[openai.AsyncOpenAI], Callable[..., Awaitable[Any]]]
"""Picks the endpoint method off the client of the replica a request got."""


class OpenAIWorker(Worker):
    """Runs generation and chat tasks, streamed or not, through the official ``openai`` client.

    * ``model``: the name sent to the server; ``None`` asks ``/models`` once and takes the first.
      A task's own ``model`` field wins over both.
    * ``max_concurrency``: requests in flight to this backend (a semaphore, per event loop): set
      it to the engine's slots (llama-server ``--parallel``), so that load above them waits in
      the task queue, where another replica can take it, and not inside one server.
    * ``max_retries``: the client's own bounded retries, with exponential backoff, on 408/409/
      429/5xx and connection errors; after them a typed ``BACKEND_ERROR`` (retryable or not).
    * ``timeout``: seconds for each read of the HTTP stream; ``connect_timeout`` for the connect.
    * ``native_n``: pass ``n`` > 1 to the server. Off by default, because some servers silently
      ignore ``n``: the worker then sends ``n`` requests (``seed + i`` when seeded), which a
      batching engine runs at once anyway.
    * ``stream_plain``: stream the requests of plain (not streamed) generation and chat tasks
      too, which measures their time to first token (``ttft_s``). Off sends one request and
      reads one response, which costs the server (and this worker) one reply instead of an
      SSE event per token. Streamed tasks always stream.
    * ``base_url``: one engine, or its replicas (a list, or comma-separated); ``resolve_every``
      re-resolves their host names to every address (compose replicas, a k8s headless
      service). ``max_concurrency`` is then per replica.
    * ``affinity``: route each task by its ``affinity_key`` to the replica that holds its
      prefix while it has a free slot, waiting at most ``affinity_wait`` seconds for it
      (``EnginePool``); off, the least loaded replica takes it. ``pin_slots``: pin the request
      to the engine slot that caches its prefix (llama-server's ``id_slot``, ``cache_prompt``),
      among slots ``slot_offset ..`` ``+ max_concurrency - 1`` (workers sharing an engine pin
      disjoint ranges; off, llama-server picks the idle slot with the longest common prefix
      and restores prefixes from its RAM prompt cache itself).
      A replica that refuses or drops a connection is set aside and the request retried on
      another one.
    * ``sampling_defaults``: the model's sampling settings, filled into every task that leaves
      them unset (``top_k``, ``min_p``, ``repetition_penalty`` travel as extra body fields);
      ``None`` takes the table of ``devstack.model_files`` for ``model``, ``{}`` sends none.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        api_key: str = "none",
        model: str | None = None,
        *,
        max_concurrency: int = 8,
        max_retries: int = 2,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        native_n: bool = False,
        stream_plain: bool = True,
        client: openai.AsyncOpenAI | None = None,
        resolve_every: float | None = None,
        affinity: bool = True,
        affinity_wait: float = 0.25,
        pin_slots: bool = False,
        slot_offset: int = 0,
        sampling_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.sampling_defaults = (
            model_sampling(model) if sampling_defaults is None else check_sampling(sampling_defaults)
        )
        self.backend = OpenAIBackend(
            base_url,
            api_key,
            model,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            timeout=timeout,
            connect_timeout=connect_timeout,
            client=client,
            resolve_every=resolve_every,
            affinity_wait=affinity_wait,
            pin_slots=pin_slots,
            slot_offset=slot_offset,
        )
        self.native_n = native_n
        self.stream_plain = stream_plain
        self.affinity = affinity

    @property
    def base_url(self) -> str:
        return self.backend.base_url

    @property
    def pool(self) -> EnginePool:
        """The engine's replicas and their counters (``pool.stats()``)."""
        return self.backend.pool

    async def start(self) -> None:
        self.backend.client()

    async def stop(self) -> None:
        await self.backend.close()

    # -- one streamed request ---------------------------------------------------------------

    def _route(self, task: Task) -> str | None:
        return task.affinity_key if self.affinity else None

    async def _stream(
        self,
        api: Api,
        params: dict[str, Any],
        feed: Feed,
        *,
        key: str | None = None,
        prompt: str = "",
        restartable: bool = False,
    ) -> AsyncGenerator[tuple[StreamAccumulator, int], None]:
        """Yield (accumulated response, new tokens) per chunk. Closing this generator closes
        the HTTP stream, which makes the server stop generating.

        A replica that refuses or drops the connection is set aside and the request goes to
        another one: before its first token, or at any point when ``restartable`` (the caller
        keeps only the last response, so a restart replaces what it had)."""
        attempts = len(self.backend.pool.engines)
        for attempt in range(attempts):
            yielded = False
            async with self.backend.lease(key, prompt) as lease:
                acc = StreamAccumulator()
                try:
                    stream = await api(lease.client)(**_pinned(params, lease))
                except BACKEND_EXCEPTIONS as exc:
                    if _failover(self.backend.pool, lease, exc, attempt, attempts):
                        continue
                    raise self.backend.error(exc, url=lease.engine.url) from exc
                try:
                    async for chunk in stream:
                        new = feed(acc, chunk)
                        if new:
                            yielded = True
                            yield acc, new
                except BACKEND_EXCEPTIONS as exc:
                    if (restartable or not yielded) and _failover(self.backend.pool, lease, exc, attempt, attempts):
                        continue
                    raise self.backend.error(exc, after_retries=False, url=lease.engine.url) from exc
                finally:
                    await stream.close()
                acc.finish()
                _done(self.backend.pool, lease, acc)
            if not acc.choices:
                raise bad_body(self.base_url, "a stream without any choice (not an OpenAI event stream?)")
            if any(c.finish_reason is None for c in acc.choices.values()):
                # A server that ends a stream with [DONE] and no finish_reason (llama-cpp-python's
                # did whenever another request waited) cut the output: not a result.
                raise BackendError(
                    f"backend {lease.engine.url} ended the stream without a finish_reason (interrupted)",
                    retryable=True,
                    details={"backend": lease.engine.url, "tokens": sum(c.tokens for c in acc.choices.values())},
                )
            yield acc, 0
            return

    async def _collect(
        self, api: Api, params: dict[str, Any], feed: Feed, *, key: str | None = None, prompt: str = ""
    ) -> StreamAccumulator:
        """One whole response: streamed (``stream_plain``), else one plain request."""
        if not params.get("stream"):
            return await self._once(api, params, key=key, prompt=prompt)
        acc = StreamAccumulator()
        async for acc, _ in self._stream(api, params, feed, key=key, prompt=prompt, restartable=True):  # noqa: B007
            pass
        return acc

    async def _once(
        self, api: Api, params: dict[str, Any], *, key: str | None = None, prompt: str = ""
    ) -> StreamAccumulator:
        attempts = len(self.backend.pool.engines)
        for attempt in range(attempts):
            async with self.backend.lease(key, prompt) as lease:
                acc = StreamAccumulator()
                try:
                    response = await api(lease.client)(**_pinned(params, lease))
                except BACKEND_EXCEPTIONS as exc:
                    if _failover(self.backend.pool, lease, exc, attempt, attempts):
                        continue
                    raise self.backend.error(exc, url=lease.engine.url) from exc
                acc.feed_response(with_choices(response, lease.engine.url))
                acc.finish()
                _done(self.backend.pool, lease, acc)
            break
        if not acc.choices:
            raise bad_body(self.base_url, "a response without any choice")
        return acc

    # -- handlers ---------------------------------------------------------------------------

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        model = await self.backend.resolve_model(task.model)
        n = task.n or 1
        if n == 1 or self.native_n:
            requests = [completion_params(task, model, stream=self.stream_plain)]
        else:
            requests = [completion_params(task, model, stream=self.stream_plain, n=1) for _ in range(n)]
            if task.seed is not None:  # distinct samples, still reproducible
                for i, params in enumerate(requests):
                    params["seed"] = task.seed + i
        key, prompt = self._route(task), task.input_str or ""
        accs = await gather_or_cancel(
            self._collect(_completions, params, _feed_c, key=key, prompt=prompt) for params in requests
        )
        choices = [c.choice() for acc in accs for _, c in sorted(acc.choices.items())]
        if not choices:
            raise BackendError(f"backend {self.base_url} returned no choices", retryable=True)
        prompt_chars = len(task.input_str or "") or 4 * len(task.input_tokens or ())
        usage = accs[0].final_usage(prompt_chars)
        for acc in accs[1:]:
            usage = usage + acc.final_usage(prompt_chars)
        first = choices[0]
        task.output_str = first.text
        task.finish_reason = first.finish_reason
        task.logprobs = first.logprobs
        task.choices = choices if len(choices) > 1 else None
        task.usage = usage
        task.ttft_s = min((a.ttft_s for a in accs if a.ttft_s is not None), default=None)
        task.latency_s = max(a.latency_s for a in accs)
        _note_estimate(task, accs)

    @streams(StreamingGenerationTask)
    async def generate_stream(self, task: StreamingGenerationTask) -> AsyncIterator[int]:
        if task.n is not None and task.n > 1:
            raise NotSupported("a streamed generation follows one sample: yield n streaming tasks")
        model = await self.backend.resolve_model(task.model)
        params = completion_params(task, model, n=1)
        prompt_chars = len(task.input_str or "") or 4 * len(task.input_tokens or ())
        task.output_str = task.output_str or ""
        stream = self._stream(_completions, params, _feed_c, key=self._route(task), prompt=task.input_str or "")
        try:
            async for acc, new in stream:
                _fill_generation(task, acc, prompt_chars)
                if new:
                    yield new
                if task.cancel_flag:
                    break
        finally:
            await stream.aclose()

    @handles(ChatTask)
    async def chat(self, task: ChatTask) -> None:
        model = await self.backend.resolve_model(task.model)
        params = chat_params(task, model, stream=self.stream_plain)
        acc = await self._collect(_chats, params, _feed_chat, key=self._route(task), prompt=_chat_text(task))
        _fill_chat(task, acc)

    @streams(StreamingChatTask)
    async def chat_stream(self, task: StreamingChatTask) -> AsyncIterator[int]:
        """The chat completions stream, chunk by chunk: the text so far on every partial,
        tool calls (assembled from their deltas) complete on the last."""
        model = await self.backend.resolve_model(task.model)
        params = chat_params(task, model, stream=True)  # refuses n > 1
        stream = self._stream(_chats, params, _feed_chat, key=self._route(task), prompt=_chat_text(task))
        try:
            async for acc, new in stream:
                _fill_chat(task, acc)
                if new:
                    yield new
                if task.cancel_flag:
                    break
        finally:
            await stream.aclose()

    async def served_models(self) -> list[str]:
        """The configured model and every model the server lists (``/models``)."""
        return await self.backend.served_models()


def _completions(client: openai.AsyncOpenAI) -> Callable[..., Awaitable[Any]]:
    return client.completions.create


def _chats(client: openai.AsyncOpenAI) -> Callable[..., Awaitable[Any]]:
    return client.chat.completions.create


def _chat_text(task: ChatTask) -> str:
    """A chat's messages as one text, to compare what engine slots hold (prefix matching)."""
    return "".join(f"{m.role}:{m.content or ''}\n" for m in task.messages)


def _pinned(params: dict[str, Any], lease: Lease) -> dict[str, Any]:
    """``params`` with the lease's engine-slot pin in ``extra_body``."""
    pin = lease.extra_body()
    if not pin:
        return params
    return {**params, "extra_body": {**params.get("extra_body", {}), **pin}}


def _failover(pool: EnginePool, lease: Lease, exc: BaseException, attempt: int, attempts: int) -> bool:
    """Set aside a replica that refused or dropped the connection; True when another replica
    may take the request."""
    if not isinstance(exc, ENGINE_GONE) or attempts < 2:
        return False
    pool.mark_down(lease.engine, exc)
    return attempt + 1 < attempts


def _done(pool: EnginePool, lease: Lease, acc: StreamAccumulator) -> None:
    """Count what the replica reused, and remember what the pinned slot now caches."""
    if acc.usage is not None:
        pool.record(lease, acc.usage)
    first = acc.choices.get(0)
    if first is not None and lease.key is not None:
        lease.cached_text = lease.prompt + first.text


def _feed_c(acc: StreamAccumulator, chunk: Any) -> int:
    return acc.feed_completion(chunk)


def _feed_chat(acc: StreamAccumulator, chunk: Any) -> int:
    return acc.feed_chat(chunk)


def _fill_generation(task: StreamingGenerationTask, acc: StreamAccumulator, prompt_chars: int) -> None:
    out = acc.choice(0)
    task.output_str = out.text
    task.finish_reason = out.finish_reason
    task.logprobs = out.logprobs if out.wants_logprobs else None
    task.usage = acc.final_usage(prompt_chars)
    task.ttft_s = acc.ttft_s
    task.latency_s = acc.latency_s
    _note_estimate(task, [acc])


def _fill_chat(task: ChatTask, acc: StreamAccumulator) -> None:
    out = acc.choice(0)
    task.output_message = out.message()
    task.output_str = out.text
    task.finish_reason = out.finish_reason
    task.logprobs = out.logprobs if out.wants_logprobs else None
    prompt_chars = sum(len(m.content or "") for m in task.messages)
    task.usage = acc.final_usage(prompt_chars)
    task.ttft_s = acc.ttft_s
    task.latency_s = acc.latency_s
    _note_estimate(task, [acc])


def _note_estimate(task: GenerationTask | ChatTask, accs: list[StreamAccumulator]) -> None:
    """Say so when token counts are ours, not the server's: budgets built on them are rough."""
    if any(a.usage_estimated for a in accs):
        task.customized_result_fields = {**(task.customized_result_fields or {}), "usage_estimated": True}


def check_sampling(values: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling defaults checked against the wire model (a typo fails at start, not per task)."""
    return SamplingParams(**dict(values)).model_dump(exclude_none=True)
