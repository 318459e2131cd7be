"""Schemathesis against the gateway's own OpenAPI schema, over real HTTP: positive and negative
cases for every operation; whatever is sent, no 500, and every error is OpenAI's shape with a
typed code. Driven programmatically (one hypothesis run per operation and mode), so the server
can start in a fixture."""

from __future__ import annotations

from typing import Any

import requests  # schemathesis' own transport
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from .conftest import Bus

CODES_5XX = {"not_supported", "no_worker", "no_controller", "at_capacity", "timeout", "backend_error", "worker_error"}
EXAMPLES = 25


def _check(case: Any, response: Any) -> None:
    where = f"{case.method} {case.formatted_path} body={str(case.body)[:200]}"
    assert response.status_code != 500, f"{where} -> 500 {response.text[:300]}"
    content_type = response.headers.get("content-type") or [""]
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if response.status_code >= 400 and content_type.startswith("application/json"):
        error = response.json()["error"]
        assert {"message", "type", "code"} <= set(error), where
        if response.status_code >= 500:
            assert error["code"] in CODES_5XX, f"{where} -> {error}"


def test_gateway_never_answers_500(bus: Bus) -> None:
    schema = schemathesis.openapi.from_url(bus.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    _check(case, case.call(base_url=bus.url, session=session, headers=bus.headers, timeout=15))

                try:
                    run()
                except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
                    assert mode is GenerationMode.NEGATIVE, operation.label
