"""OpenAI-compatible endpoints. ``model`` names the method (``method`` or
``method/backend-model``, where the backend model is one a worker serves); every token the
method spends is counted in ``usage``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..._compat import TaskGroup
from ...errors import DeadlineExceeded, ScaffoldingError, UnknownMethod
from ...jobs import is_terminal
from ...proto.errors import ErrorCode
from ...proto.messages import Job, JobEvent, JobEventType, JobResult
from ...proto.tasks import ChatMessage, new_id
from ...runtime.fanout import gather_or_cancel
from .auth import tenant_of
from .errors import error_body, error_response, from_info
from .schemas import ChatCompletionRequest, CompletionRequest, _OpenAIRequest
from .state import GatewayState

router = APIRouter()


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def _job_for(
    state: GatewayState,
    body: _OpenAIRequest,
    *,
    prompt: str | None = None,
    messages: list[ChatMessage] | None = None,
) -> Job:
    method, backend_model = await _check_model(state, body.model)
    params = dict(body.method_params)
    if isinstance(body, ChatCompletionRequest) and body.tools:
        params.setdefault("tools", [t.model_dump() for t in body.tool_definitions() or []])
        if body.tool_choice is not None:
            params.setdefault("tool_choice", body.tool_choice)
    return Job(
        method=method,
        prompt=prompt,
        messages=messages,
        params=params,
        model=backend_model or None,
        sampling=body.sampling(),
        budget=body.budget,
        stream=body.stream,
        metadata={"source": "gateway", "user": body.user} if body.user else {"source": "gateway"},
    )


async def _check_model(state: GatewayState, model: str) -> tuple[str, str]:
    """``(method, backend model)`` of an OpenAI ``model``, or ``UnknownMethod`` (404
    ``model_not_found``) when controllers serve no such method or workers no such model."""
    method, _, backend_model = model.partition("/")
    known = await state.methods()  # NoController -> 503
    if method not in known:
        raise UnknownMethod(
            f"The model `{model}` does not exist: {method!r} is not a served method",
            details={"method": method, "available": known},
        )
    if backend_model and not await state.serves_model(backend_model):
        raise UnknownMethod(
            f"The model `{model}` does not exist: no worker serves the backend model {backend_model!r}",
            details={"method": method, "model": backend_model, "available": await state.backend_models()},
        )
    return method, backend_model


def _finish_reason(result: JobResult) -> str:
    if result.tool_calls:
        return "tool_calls"
    if result.stop_reason.startswith("budget") or result.finish_reason == "length":
        return "length"
    if result.finish_reason == "tool_calls":
        return "tool_calls"
    return "stop"


def _usage(*results: JobResult) -> dict[str, Any]:
    """OpenAI's usage object; ``prompt_tokens_details.cached_tokens``: prompt tokens the engines
    served from their prefix caches."""
    prompt = sum(r.usage.prompt_tokens for r in results)
    completion = sum(r.usage.completion_tokens for r in results)
    cached = sum(r.usage.cached_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _tool_calls(result: JobResult) -> list[dict[str, Any]]:
    """The assistant's tool calls in OpenAI's shape: the client runs the tools."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in result.tool_calls or []
    ]


def _extension(job: Job, result: JobResult) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "method": job.method,
        "answer": result.answer,
        "stop_reason": result.stop_reason,
        "num_tasks": result.num_tasks,
        "elapsed_s": result.elapsed_s,
        "usage_by_controller": {k: v.model_dump() for k, v in result.usage_by_controller.items()},
        "metadata": result.metadata,
        **({"degraded": result.metadata["degraded"]} if "degraded" in result.metadata else {}),
    }


class _Run:
    """Follows one job's events for an HTTP request, and cancels the job if the client leaves."""

    def __init__(self, state: GatewayState, job: Job, request: Request, timeout: float | None) -> None:
        self.state, self.job, self.request = state, job, request
        self.timeout = timeout or state.request_timeout
        self.finished = False
        self.owner = tenant_of(request)

    async def events(self) -> AsyncIterator[JobEvent]:
        try:
            async for event in self.state.jobs.events(self.job, timeout=self.timeout, owner=self.owner):
                if is_terminal(event):
                    self.finished = True
                yield event
        finally:
            if not self.finished:  # client gone, or the gateway gave up: stop the work
                # Shielded: a disconnect cancels the response's scope, and the cancel must
                # still go out (bounded, like every wait).
                with anyio.move_on_after(5, shield=True):
                    await self.state.jobs.cancel(self.job.id, owner=self.owner)

    async def result(self) -> JobResult:
        """Wait for the result; if the client disconnects meanwhile, cancel the job."""

        async def watch() -> None:
            while not await self.request.is_disconnected():  # noqa: ASYNC110 - Starlette offers no event
                await asyncio.sleep(0.25)

        async def collect() -> JobResult | ScaffoldingError:
            """Returns the error rather than raising it, so the task group stays out of it."""
            try:
                async for event in self.events():
                    if event.type is JobEventType.RESULT and event.result is not None:
                        return event.result
                    if event.type is JobEventType.ERROR and event.error is not None:
                        return ScaffoldingError.from_info(event.error)
            except ScaffoldingError as exc:
                return exc
            return DeadlineExceeded(f"job {self.job.id} ended without a result")

        async with TaskGroup() as tg:
            watcher = tg.create_task(watch())
            collector = tg.create_task(collect())
            done, _ = await asyncio.wait({watcher, collector}, return_when=asyncio.FIRST_COMPLETED)
            watcher.cancel()
            if collector not in done:
                collector.cancel()
        if collector.cancelled():
            raise ScaffoldingError("the client disconnected; job cancelled", code=ErrorCode.CANCELLED)
        outcome = collector.result()
        if isinstance(outcome, ScaffoldingError):
            raise outcome
        return outcome


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(run: _Run, *, chat: bool, model: str, include_usage: bool = False) -> AsyncIterator[bytes]:
    """OpenAI chunk stream: token deltas as they come (single-path methods), else the final
    answer as one delta; the scaffolding extension rides on the finish chunk. ``usage`` comes
    once: on the finish chunk, or with ``include_usage`` as OpenAI sends it, only on a last
    chunk with no choices (``"usage": null`` on every other)."""
    created = int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"
    cid = ("chatcmpl-" if chat else "cmpl-") + run.job.id
    usage_slot: dict[str, Any] = {"usage": None} if include_usage else {}

    def envelope(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        fields = {**usage_slot, **extra}
        return _sse({"id": cid, "object": obj, "created": created, "model": model, "choices": choices, **fields})

    def chunk(delta: str | None, finish: str | None = None, **extra: Any) -> bytes:
        if chat:
            d: dict[str, Any] = {} if delta is None else {"content": delta}
            choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return envelope([choice], **extra)

    if chat:
        yield envelope([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    streamed = ""
    try:
        async for event in run.events():
            if event.type is JobEventType.PARTIAL and event.text:
                streamed += event.text
                yield chunk(event.text)
            elif event.type is JobEventType.RESULT and event.result is not None:
                result = event.result
                if not streamed:
                    yield chunk(result.text)
                elif result.text.startswith(streamed) and len(result.text) > len(streamed):
                    yield chunk(result.text[len(streamed) :])
                if chat and result.tool_calls:
                    calls = [dict(c, index=i) for i, c in enumerate(_tool_calls(result))]
                    yield envelope([{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}])
                if include_usage:  # OpenAI's stream_options: usage only on a last chunk, no choices
                    yield chunk(None, _finish_reason(result), scaffolding=_extension(run.job, result))
                    yield envelope([], usage=_usage(result))
                else:
                    yield chunk(
                        None, _finish_reason(result), usage=_usage(result), scaffolding=_extension(run.job, result)
                    )
            elif event.type is JobEventType.ERROR and event.error is not None:
                response = from_info(event.error)
                yield _sse(
                    error_body(
                        event.error.message,
                        code=event.error.code.value,
                        status=response.status_code,
                        details=event.error.details or None,
                    )
                )
    except ScaffoldingError as exc:
        yield _sse(error_body(exc.message, code=exc.code.value, status=500))
    yield b"data: [DONE]\n\n"


async def _serve(request: Request, body: _OpenAIRequest, job: Job, *, chat: bool) -> Any:
    """Stream the job as OpenAI chunks, or wait and answer with one OpenAI response; ``n``
    choices are ``n`` runs of the method (each its own job), run at once."""
    if body.stream_options is not None and not body.stream:
        return error_response(
            "stream_options is only allowed with stream: true", code="invalid_request", status=400,
            param="stream_options",
        )
    if body.stream:
        if body.n > 1:
            return error_response(
                "n > 1 is not supported with stream: true (ask for n choices without streaming)",
                code="invalid_request", status=400, param="n",
            )
        run = _Run(_state(request), job, request, body.timeout)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(run, chat=chat, model=body.model, include_usage=include_usage), media_type="text/event-stream"
        )
    jobs = [job] + [job.model_copy(update={"id": new_id()}) for _ in range(body.n - 1)]
    runs = [_Run(_state(request), j, request, body.timeout) for j in jobs]
    results = await _all(runs)
    choices = []
    for index, result in enumerate(results):
        choice: dict[str, Any] = {"index": index, "finish_reason": _finish_reason(result), "logprobs": None}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": result.text}
            if result.tool_calls:
                message["tool_calls"] = _tool_calls(result)
                message["content"] = result.text or None
            choice["message"] = message
        else:
            choice["text"] = result.text
        choices.append(choice)
    extension = _extension(job, results[0])
    if len(jobs) > 1:
        extension["choices"] = [_extension(j, r) for j, r in zip(jobs, results, strict=True)]
    return JSONResponse(
        {
            "id": ("chatcmpl-" if chat else "cmpl-") + job.id,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": choices,
            "usage": _usage(*results),
            "scaffolding": extension,
        }
    )


async def _all(runs: list[_Run]) -> list[JobResult]:
    """Every run's result; the first failure cancels the others (their jobs too) and is raised."""
    if len(runs) == 1:
        return [await runs[0].result()]
    return await gather_or_cancel(run.result() for run in runs)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    job = await _job_for(_state(request), body, messages=body.chat_messages())
    return await _serve(request, body, job, chat=True)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        return error_response(
            "one prompt per request (send a batch as concurrent requests)",
            code="invalid_request",
            status=400,
            param="prompt",
        )
    prompt = body.prompt[0] if isinstance(body.prompt, list) else body.prompt
    job = await _job_for(_state(request), body, prompt=prompt)
    return await _serve(request, body, job, chat=False)


def _model(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "scaffolding",
        "parameters": PARAMETERS_REFERENCE,
    }


PARAMETERS_REFERENCE = "proto/schema/methods.json"
"""Where each method kind's parameters (``method_params``) are described, as JSON Schema."""


@router.get("/v1/models")
async def models(request: Request) -> Any:
    names = await _state(request).methods()
    return {"object": "list", "data": [_model(n) for n in names]}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, request: Request) -> Any:
    """One method, or ``method/backend-model``: found exactly when a request naming it would be."""
    try:
        await _check_model(_state(request), model_id)
    except UnknownMethod as exc:
        return error_response(exc.message, code="model_not_found", status=404, param="model", details=exc.details)
    return _model(model_id)
