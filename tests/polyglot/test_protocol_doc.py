"""proto/PROTOCOL.md stays true to the code: names, error codes, limits and the worked example."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack

from scaffolding_nats.proto import DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_TASK_BYTES, ErrorCode, Job, Subjects, decode
from scaffolding_nats.proto.errors import RETRYABLE_CODES
from scaffolding_nats.proto.subjects import (
    HEADER_ATTEMPTS_BELOW,
    HEADER_MSG_ID,
    HEADER_REPLY_TO,
    HEADER_SERVICE_ERROR,
    HEADER_SERVICE_ERROR_CODE,
    HEADER_TRACEPARENT,
)
from scaffolding_nats.transport.jetstream import Durability

DOC = (Path(__file__).resolve().parents[2] / "proto" / "PROTOCOL.md").read_text()


def error_table() -> dict[str, str]:
    """Rows of the error-code table: code -> its "Retryable" cell."""
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| ([^|]+) \|", DOC, flags=re.MULTILINE)
    return {code: retryable.strip() for code, retryable in rows if code in ErrorCode._value2member_map_}


def test_every_error_code_is_documented_with_its_retryability():
    table = error_table()
    assert set(table) == {c.value for c in ErrorCode}
    for code in ErrorCode:
        documented = table[code.value]
        if code in RETRYABLE_CODES:
            assert documented in ("yes", "usually", "depends"), code
        else:
            assert documented == "no", code


def test_names_and_headers_match_the_code():
    s = Subjects()
    for name in (
        s.jobs_stream,
        s.jobs_consumer,
        s.events_stream,
        s.results_bucket,
        s.controller_service,
        s.task_queue_group("generation"),
        s.tasks("generation"),
        s.controller_methods,
        s.task_queue("generation"),
        s.tasks_stream,
        s.task_consumer("generation"),
        s.task_final("generation", "x").removesuffix("x"),
    ):
        assert name in DOC, name
    assert "`TEAM_A`" in DOC and Subjects("team.a").jobs_stream == "TEAM_A_JOBS"
    for header in (
        HEADER_MSG_ID,
        HEADER_TRACEPARENT,
        HEADER_SERVICE_ERROR,
        HEADER_SERVICE_ERROR_CODE,
        HEADER_REPLY_TO,
        HEADER_ATTEMPTS_BELOW,
    ):
        assert f"`{header}`" in DOC, header


def test_limits_match_the_code():
    d = Durability()
    assert DEFAULT_MAX_PAYLOAD == 1024 * 1024 and DEFAULT_MAX_TASK_BYTES == 900 * 1024
    assert "1 MiB" in DOC and "900 KiB" in DOC
    assert f"ack wait {d.job_ack_wait:.0f} s" in DOC and f"max deliver {d.job_max_deliver}" in DOC
    assert d.events_max_age == d.results_ttl == 3600 and "1 h" in DOC


def test_worked_example_bytes_are_the_job_they_describe():
    hex_line = re.search(r"As one line: `([0-9a-f]+)`", DOC).group(1)
    data = bytes.fromhex(hex_line)
    expected = {"v": 1, "id": "job42", "method": "majority_vote", "prompt": "What is 6*7?", "params": {"sample_num": 3}}
    assert data == msgpack.packb(expected) and len(data) == 74 and "74 bytes" in DOC
    job = decode(Job, data)
    assert job.id == "job42" and job.params == {"sample_num": 3}
    # The annotated dump carries the same bytes as the one-line form.
    dump = re.search(r"\*\*The Job\*\*.*?```\n(.*?)```", DOC, flags=re.DOTALL).group(1)
    dumped = "".join(
        re.match(r"((?:[0-9a-f]{2} )*[0-9a-f]{2})", line).group(1).replace(" ", "") for line in dump.splitlines()
    )
    assert dumped == hex_line
    header = b"NATS/1.0\r\nNats-Msg-Id: job42\r\n\r\n"
    assert f"HPUB scaf.jobs.majority_vote _INBOX.x1 {len(header)} {len(header) + len(data)}" in DOC


def test_section_numbers_are_unique_and_in_order():
    """Two sections were once numbered 5.5: a reference to "section 5.5" must name one."""
    numbers = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[ .]", DOC, flags=re.MULTILINE)
    assert len(numbers) == len(set(numbers)), sorted(n for n in numbers if numbers.count(n) > 1)
    keys = [tuple(int(p) for p in n.split(".")) for n in numbers]
    assert keys == sorted(keys)
