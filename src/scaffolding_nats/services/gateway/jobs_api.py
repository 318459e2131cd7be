"""The native jobs API: submit a job, read its state, stream its events, cancel it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...proto.messages import Job, job_digest
from .auth import tenant_of
from .errors import error_body, error_response
from .schemas import JobSubmission
from .state import GatewayState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{1,128}$", description="a job id: one subject token")]


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


@router.post("", status_code=202)
async def submit(body: JobSubmission, request: Request) -> Any:
    """Accepted durably even when no controller runs yet: it runs when one starts.

    A client-chosen ``id`` is an idempotency key within the tenant (for as long as the job's
    record is kept): posting it again gets the existing job (the same 202, marked
    ``Idempotent-Replayed: true``), or 409 if the body differs. Other tenants' ids never collide."""
    state = _state(request)
    fields: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set if name != "id"}
    if body.id is not None:
        fields["id"] = body.id
    job = Job(**fields)
    existing = await state.jobs.submit_once(job, owner=tenant_of(request))
    if existing is not None and existing.digest != job_digest(job):
        return error_response(
            f"job {job.id!r} exists with a different body; choose another id to submit another job",
            code="job_id_conflict",
            status=409,
            param="id",
        )
    return JSONResponse(
        {"id": job.id, "status_url": f"/v1/jobs/{job.id}", "events_url": f"/v1/jobs/{job.id}/events"},
        status_code=202,
        headers={"Idempotent-Replayed": "true"} if existing is not None else None,
    )


def _not_found(job_id: str) -> JSONResponse:
    return error_response(f"no job {job_id!r} (unknown, not started yet, or expired)", code="job_not_found", status=404)


async def _own_record(request: Request, job_id: str) -> Any:
    """The tenant's job of that id (its key is the tenant's: another tenant's job of the same
    id is a different job, as invisible as an unknown one), or None."""
    return await _state(request).jobs.own_record(job_id, owner=tenant_of(request))


@router.get("/{job_id}")
async def status(job_id: JobId, request: Request) -> Any:
    record = await _own_record(request, job_id)
    if record is None:
        return _not_found(job_id)
    body = record.model_dump(mode="json", exclude={"owner", "digest"})
    return JSONResponse(body)


@router.get("/{job_id}/events", response_model=None)
async def events(job_id: JobId, request: Request) -> StreamingResponse | JSONResponse:
    """Server-sent events: every event of the job from the first (or after the ``Last-Event-ID``
    an EventSource sends when it reconnects), then live ones."""
    state = _state(request)
    if await _own_record(request, job_id) is None:  # a job posted here has its record from the start
        return _not_found(job_id)
    last = request.headers.get("last-event-id", "")
    after_seq = int(last) if last.isdigit() else -1

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for event in state.jobs.replay(
                job_id, after_seq=after_seq, timeout=state.request_timeout, owner=tenant_of(request)
            ):
                data = event.model_dump_json(exclude_none=True)
                yield f"event: {event.type.value}\nid: {event.seq}\ndata: {data}\n\n".encode()
        except Exception as exc:
            code = getattr(getattr(exc, "code", None), "value", "internal")
            yield f"event: error\ndata: {json.dumps(error_body(str(exc), code=code, status=500))}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.delete("/{job_id}", status_code=202)
async def cancel(job_id: JobId, request: Request) -> Any:
    if await _own_record(request, job_id) is None:
        return _not_found(job_id)
    await _state(request).jobs.cancel(job_id, owner=tenant_of(request))
    return JSONResponse({"id": job_id, "cancel_requested": True}, status_code=202)
