"""The compose stack end to end, in the order a user meets it: the README's request, every
served method, streams, the python sandbox in its container, killed containers under load, and
``docker compose down -v``. Each step is its own test, so a failure names the step."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.test_methods import CASES

from .conftest import PROJECT, ComposeStack, readme_commands

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

QUESTION = [{"role": "user", "content": "What is 23 + 19? Answer with the number."}]
PARAMS = {c.method: c for c in CASES}
# Methods that compose's methods file adds to the defaults, with a small sample count.
SMALL = {"sample_num": 2}


def test_readme_request_answers_42(stack: ComposeStack) -> None:
    curl = readme_commands()[2]
    assert curl.startswith("curl ") and "127.0.0.1:8000" in curl
    done = stack.sh(curl.replace("127.0.0.1:8000", stack.url.removeprefix("http://")), timeout=300)
    reply = json.loads(done.stdout)
    assert reply["model"] == "majority_vote", reply
    assert reply["scaffolding"]["answer"] == "42", reply["scaffolding"]
    assert reply["choices"][0]["finish_reason"] == "stop"


def _request(name: str) -> dict[str, Any]:
    case = PARAMS.get(name)
    body: dict[str, Any] = {"model": name, "messages": QUESTION, "temperature": 0.7, "seed": 7}
    body["max_tokens"] = case.max_tokens if case else 48
    body["method_params"] = case.params if case else SMALL
    if case and case.temperature == 0.0:
        body["temperature"] = 0.0
    return body


def test_every_served_method_answers_with_its_shape(stack: ComposeStack) -> None:
    with stack.client() as http:
        names = [m["id"] for m in http.get("/v1/models").raise_for_status().json()["data"]]
    assert {"chat", "majority_vote", "program_vote", "best_of_n", "vote5", "best_of_4"} <= set(names)

    def run(name: str) -> tuple[str, int, dict[str, Any]]:
        with stack.client() as http:
            response = http.post("/v1/chat/completions", json=_request(name))
        return name, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=4) as pool:  # the engine batches 8 requests at once
        results = list(pool.map(run, names))
    failures = []
    for name, status, reply in results:
        if status != 200:
            failures.append(f"{name}: HTTP {status} {reply}")
            continue
        ext, message = reply["scaffolding"], reply["choices"][0]["message"]
        problems = []
        if not (message.get("content") or message.get("tool_calls")):
            problems.append("no content")
        if ext["stop_reason"] != "completed" or ext["num_tasks"] < 1 or reply["usage"]["completion_tokens"] < 1:
            problems.append(f"stop {ext['stop_reason']}, {ext['num_tasks']} tasks, usage {reply['usage']}")
        metadata = ext["metadata"]
        method = name if name in PARAMS else {"vote5": "majority_vote", "best_of_4": "best_of_n"}.get(name, name)
        if method in ("majority_vote", "self_consistency", "weighted_vote", "program_vote") and "votes" not in metadata:
            problems.append(f"no votes in {metadata}")
        if method.startswith("best_of") and "scores" not in metadata:
            problems.append(f"no scores in {metadata}")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


STREAMING_STEP = 8  # the native "stream" method's default: one frame every 8 tokens


def _stream(stack: ComposeStack, index: int) -> tuple[int, str | None, bool, int]:
    """(content chunks, the last finish_reason, whether [DONE] came, completion tokens)."""
    prompt = f"Write the numbers from 1 to {30 + index}, separated by commas."
    body = {"model": "stream", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 96, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    chunks, finish, done, tokens = 0, None, False, 0
    with stack.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            tokens = (event.get("usage") or {}).get("completion_tokens", tokens)
            for choice in event.get("choices", []):
                chunks += bool(choice.get("delta", {}).get("content"))
                finish = choice.get("finish_reason") or finish
    return chunks, finish, done, tokens


def test_three_concurrent_streams_finish(stack: ComposeStack) -> None:
    """Three streams at once, while the healthchecks keep asking: none is cut short, and each
    arrives as token deltas (a frame per ``STREAMING_STEP`` tokens), not as one chunk at the end.
    The model decides how long its answer is, so the chunk count is checked against its tokens."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda i: _stream(stack, i), range(3)))
    for chunks, finish, done, tokens in results:
        assert done and finish in ("stop", "length"), results
        assert tokens > 0, results
        assert chunks >= tokens // STREAMING_STEP, results
    assert sum(tokens for *_, tokens in results) > 3 * STREAMING_STEP, results  # something was streamed


def test_python_tool_runs_sandboxed_in_its_container(stack: ComposeStack) -> None:
    """The worker-tools container's own settings (read-only root, no capabilities, uid 10001)
    let bwrap build its sandbox, and the program inside sees none of the container's secrets."""
    program = (
        "import asyncio; from scaffolding_nats.workers.tools.sandbox import Sandbox; "
        "r = asyncio.run(Sandbox().run('import os; print(6*7, os.getuid(), sorted(os.environ))')); "
        "print(r.exit_code, r.limit, r.stdout.strip())"
    )
    done = stack.compose("exec", "-T", "worker-tools", "python", "-c", json.dumps(program), timeout=120)
    out = done.stdout.strip()
    assert out.startswith("0 None 42 "), out
    assert "SCAF_NATS_PASSWORD" not in out


def _submit(stack: ComposeStack, i: int) -> str:
    body = {"method": "majority_vote", "messages": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "params": {"sample_num": 2, "sampler": {"method": "native", "params": {"max_tokens": 64}}}}  # fmt: skip
    with stack.client() as http:
        response = http.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _finished(stack: ComposeStack, job_ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    with stack.client(timeout=10) as http:
        while time.monotonic() < deadline:
            for job_id in job_ids:
                if states.get(job_id) in ("succeeded", "failed"):
                    continue
                try:
                    response = http.get(f"/v1/jobs/{job_id}")
                except Exception:  # the gateway may be restarting its NATS connection
                    continue
                if response.status_code == 200:
                    states[job_id] = response.json()["state"]
            if all(states.get(j) in ("succeeded", "failed") for j in job_ids):
                break
            time.sleep(2)
    return states


def _crash(stack: ComposeStack, container: str) -> None:
    """SIGKILL of the container's main process from the host: what an OOM kill or a crash is.
    (``docker kill`` counts as a manual stop, after which Docker never restarts a container.)"""
    pid = stack.sh(f"docker inspect -f '{{{{.State.Pid}}}}' {container}").stdout.strip()
    assert pid.isdigit() and int(pid) > 0, pid
    os.kill(int(pid), signal.SIGKILL)


def test_killed_workers_and_controllers_cost_no_job(stack: ComposeStack) -> None:
    """Mid-load, one replica of each is ``docker kill``ed (the other takes over its redelivered
    work), then the other one crashes (the restart policy brings it back, and it resumes the
    jobs): every job completes, and the stack is whole and healthy again afterwards."""
    if os.geteuid() != 0 or not stack.env.get("DOCKER_HOST", "unix://").startswith("unix://"):
        pytest.skip("crashing a container's process needs root on the engine's own host")
    workers = stack.compose("ps", "-q", "worker-openai").stdout.split()
    controllers = stack.compose("ps", "-q", "controller").stdout.split()
    assert len(workers) == len(controllers) == 2, (workers, controllers)
    jobs = [_submit(stack, i) for i in range(8)]
    time.sleep(3)  # the jobs are running: tasks at the workers, generators in the controllers
    stack.sh(f"docker kill {workers[0]} {controllers[0]}", timeout=60)
    time.sleep(5)
    for container in (workers[1], controllers[1]):
        _crash(stack, container)
    states = _finished(stack, jobs, timeout=420)
    assert [states.get(j) for j in jobs] == ["succeeded"] * len(jobs), (
        states,
        stack.logs("controller")[-3000:],
        stack.logs("worker-openai")[-3000:],
    )
    for container in (workers[1], controllers[1]):  # restarted by Docker, not by us
        restarts = stack.sh(f"docker inspect -f '{{{{.RestartCount}}}}' {container}").stdout.strip()
        assert int(restarts) >= 1, f"{container} was not restarted by its restart policy"
    stack.sh(readme_commands()[1], timeout=300)  # `up --wait` again brings back the killed ones
    stack.wait_healthy()
    assert len(stack.compose("ps", "-q", "controller").stdout.split()) == 2


def test_down_leaves_nothing(stack: ComposeStack) -> None:
    stack.sh(readme_commands()[-1], timeout=180)  # docker compose down -v
    label = f"label=com.docker.compose.project={PROJECT}"
    for what in ("ps -a", "network ls", "volume ls"):
        left = stack.sh(f"docker {what} -q --filter {label}").stdout.split()
        assert not left, f"docker {what}: {left} left after down -v"
