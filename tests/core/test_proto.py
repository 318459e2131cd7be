"""The contract: encoding round trips, typed errors for every bad input, schema freshness."""

from pathlib import Path

import msgpack
import pytest

from scaffolding_nats.errors import ProtocolError
from scaffolding_nats.proto import (
    TASK_TYPES,
    ChatMessage,
    ChatTask,
    ErrorCode,
    GenerationTask,
    Job,
    JobEvent,
    JobEventType,
    StreamingChatTask,
    Subjects,
    TaskReply,
    TaskRequest,
    decode,
    encode,
    pack,
    task_from_request,
)
from scaffolding_nats.proto.subjects import job_key
from scaffolding_nats.schemas import stale

ROOT = Path(__file__).resolve().parents[2]


def test_task_request_round_trip_keeps_inputs_and_drops_results():
    task = GenerationTask(input_str="2+2=", max_tokens=5, temperature=0.0, stop=["\n"], top_k=3)
    task.output_str = "4"
    request = decode(TaskRequest, encode(TaskRequest(kind=task.kind, task=task.inputs())))
    copy = task_from_request(request)
    assert isinstance(copy, GenerationTask)
    assert (copy.id, copy.input_str, copy.max_tokens, copy.top_k, copy.stop) == (
        task.id,
        "2+2=",
        5,
        3,
        ["\n"],
    )
    assert copy.output_str is None


def test_every_task_kind_round_trips():
    samples = {
        "chat": ChatTask(messages=[ChatMessage(role="user", content="hi")]),
        "streaming_chat": StreamingChatTask(messages=[ChatMessage(role="user", content="hi")], streaming_step=3),
    }
    for kind, cls in TASK_TYPES.items():
        task = samples.get(kind) or (cls(tool_name="calculator") if kind == "tool_call" else cls())
        request = decode(TaskRequest, encode(TaskRequest(kind=kind, task=task.inputs())))
        assert type(task_from_request(request)) is cls


def test_results_merge_back_into_the_same_object():
    task = GenerationTask(input_str="x")
    task.merge_results({"output_str": "y", "usage": {"prompt_tokens": 1, "completion_tokens": 2}, "bogus": 1})
    assert task.output_str == "y" and task.usage is not None and task.usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xc1\xff\x00", ErrorCode.MALFORMED),
        (msgpack.packb([1, 2, 3]), ErrorCode.MALFORMED),
        (pack({"v": 99, "kind": "generation", "task": {}}), ErrorCode.UNSUPPORTED_VERSION),
        (pack({"kind": "generation", "task": {}}), ErrorCode.UNSUPPORTED_VERSION),
        (pack({"v": 1, "task": {}}), ErrorCode.INVALID),
        (pack({"v": 1, "kind": "generation", "task": "nope"}), ErrorCode.INVALID),
    ],
)
def test_bad_messages_get_typed_errors(data, code):
    with pytest.raises(ProtocolError) as info:
        decode(TaskRequest, data)
    assert info.value.code is code


def test_invalid_field_error_names_the_path():
    request = decode(TaskRequest, pack({"v": 1, "kind": "generation", "task": {"max_tokens": "many"}}))
    with pytest.raises(ProtocolError) as info:
        task_from_request(request)
    assert info.value.code is ErrorCode.INVALID
    assert "max_tokens" in info.value.message
    assert info.value.details["errors"][0]["path"] == "max_tokens"


def test_unknown_task_kind_and_oversized_payload():
    with pytest.raises(ProtocolError) as info:
        task_from_request(TaskRequest(kind="teleport", task={}))
    assert info.value.code is ErrorCode.UNKNOWN_TASK_TYPE
    with pytest.raises(ProtocolError) as info:
        decode(TaskRequest, b"x" * 100, max_bytes=10)
    assert info.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_job_and_event_round_trip():
    job = Job(method="majority_vote", prompt="1+1?", params={"sample_num": 4})
    assert decode(Job, encode(job)) == job
    event = JobEvent(job_id=job.id, seq=0, type=JobEventType.ACCEPTED)
    assert decode(JobEvent, encode(event)) == event
    reply = TaskReply(task_id="t")
    assert decode(TaskReply, encode(reply)) == reply
    with pytest.raises(ProtocolError) as info:
        decode(Job, pack({"v": 1, "method": "no.dots.allowed"}))
    assert info.value.details["errors"][0]["path"] == "method"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("messages.0.mood", {"role": "user", "content": "hi", "mood": "curious"}),
        ("messages.0.tool_calls.0.extra", {"role": "assistant", "tool_calls": [{"id": "c", "name": "f", "extra": 1}]}),
    ],
)
def test_nested_maps_of_a_job_forbid_unknown_keys_too(path, value):
    """Section 2: a map with an extra key is ``invalid``, at any depth of a message."""
    with pytest.raises(ProtocolError) as info:
        decode(Job, pack({"v": 1, "method": "chat", "messages": [value]}))
    assert info.value.code is ErrorCode.INVALID
    assert [e["path"] for e in info.value.details["errors"]] == [path]


def test_a_job_key_scopes_the_id_to_its_owner():
    s = Subjects("scaf")
    assert job_key("j1") == "j1" and job_key("j1", "alice") == "alice.j1"
    assert s.controller_owner("j1", "alice") == "scaf.controllers.owner.alice.j1"
    assert s.owner_question_key(s.controller_owner("j1", "alice")) == "alice.j1"
    for bad in ("a.b", "*", ">", ""):
        with pytest.raises(ValueError):
            job_key(bad, "alice")
        with pytest.raises(ValueError):
            job_key("j1", bad)


def test_subjects_use_one_prefix_and_reject_bad_tokens():
    s = Subjects("acme.prod")
    assert s.tasks("generation") == "acme.prod.tasks.generation"
    assert s.jobs("best_of_n") == "acme.prod.jobs.best_of_n"
    assert s.events("abc") == "acme.prod.events.abc"
    assert s.jobs_stream == "ACME_PROD_JOBS"
    with pytest.raises(ValueError):
        s.tasks("gen.eration")
    with pytest.raises(ValueError):
        Subjects("bad prefix")


def test_checked_in_schemas_are_fresh():
    problems = stale(ROOT / "proto" / "schema")
    assert not problems, f"stale schemas {problems}: run `make schema`"
