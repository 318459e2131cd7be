"""One error model: every code has one row, and every map derives from it."""

from __future__ import annotations

import pytest

from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.proto.errors import ERRORS, RESEND_CODES, RETRYABLE_CODES, ErrorCode, ErrorInfo
from scaffolding_nats.proto.tasks import GenerationTask, TaskStatus
from scaffolding_nats.runtime.worker import fail, status_for
from scaffolding_nats.services.gateway.errors import from_info


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_one_row_and_every_map_derives_from_it(code: ErrorCode) -> None:
    spec = ERRORS[code]
    info = ErrorInfo(code=code, message="m", details={"k": 1})
    exc = ScaffoldingError.from_info(info)
    assert type(exc) is spec.exception and exc.code is code and exc.details == {"k": 1}
    assert exc.to_info() == ErrorInfo(code=code, message="m", retryable=False, details={"k": 1})
    # Raised in-process, the same class comes back from the bus.
    local = spec.exception("x", code=code)
    assert type(ScaffoldingError.from_info(local.to_info())) is type(local)
    assert local.retryable is spec.retryable
    assert status_for(code) is spec.task_status
    assert from_info(info).status_code == spec.http_status
    assert (code in RETRYABLE_CODES) is spec.retryable and (code in RESEND_CODES) is spec.resend
    task = GenerationTask(input_str="q")
    fail(task, info)
    assert task.status is spec.task_status and task.status is not TaskStatus.SUCCESS


def test_a_failed_task_names_its_tag_and_attempts() -> None:
    task = GenerationTask(input_str="q", worker_tag="gen2")
    fail(task, ErrorInfo(code=ErrorCode.WORKER_ERROR, message="boom", details={"attempts": 2}))
    with pytest.raises(ScaffoldingError) as err:
        task.raise_for_status()
    assert err.value.details["worker_tag"] == "gen2" and err.value.details["attempts"] == 2
    assert err.value.details["kind"] == "generation" and err.value.code is ErrorCode.WORKER_ERROR
