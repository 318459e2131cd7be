"""A client that goes away (its process killed) cancels its job and every task in flight
within a second: streaming or not, chat or completions."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from contextlib import AsyncExitStack

import nats
import pytest

from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Subjects
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.services.gateway import GatewaySettings, create_app
from scaffolding_nats.services.gateway.auth import KeyStore
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

from .conftest import KEY, http_server

CLIENT = """
import httpx, json, sys
url, path, body, key = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
    if body.get("stream"):
        with http.stream("POST", path, json=body) as r:
            for line in r.iter_lines():
                print(line, flush=True)
    else:
        print(http.post(path, json=body).status_code, flush=True)
"""

CASES = [
    ("/v1/chat/completions", {"model": "majority_vote", "method_params": {"sample_num": 3}}, False),
    ("/v1/completions", {"model": "best_of_n", "method_params": {"sample_num": 2}}, False),
    ("/v1/chat/completions", {"model": "majority_vote", "method_params": {"sample_num": 2}}, True),
    ("/v1/completions", {"model": "beam_search"}, True),
]


@pytest.mark.parametrize(("path", "body", "stream"), CASES)
async def test_a_killed_client_cancels_its_job_and_tasks_within_a_second(nats_server, prefix, path, body, stream):
    subjects = Subjects(prefix)
    worker = SyntheticWorker(latency_s=60)
    nc = await nats.connect(nats_server.url)
    async with AsyncExitStack() as es:
        es.push_async_callback(nc.close)
        host = await es.enter_async_context(WorkerHost(nc, worker, tags=["generation", "reward"], subjects=subjects))
        controller = await es.enter_async_context(ControllerService(nc, load_registry(), subjects=subjects))
        keys = KeyStore()
        keys.add(KEY, "test")
        app = create_app(GatewaySettings(nats_url=nats_server.url, prefix=prefix, request_timeout=60, api_keys=keys))
        url = await es.enter_async_context(http_server(app))
        payload = dict(body, stream=stream)
        payload |= {"messages": [{"role": "user", "content": "a b"}]} if "chat" in path else {"prompt": "a b"}
        args = [sys.executable, "-c", CLIENT, url, path, json.dumps(payload), KEY]
        proc = subprocess.Popen(args)  # noqa: ASYNC220
        try:
            deadline = time.monotonic() + 20
            while host.stats.in_flight == 0:  # the job runs: tasks are at the worker
                assert time.monotonic() < deadline and proc.poll() is None, "the job never reached the worker"
                await asyncio.sleep(0.02)
            in_flight = host.stats.in_flight
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        killed = time.monotonic()
        while host.stats.in_flight or controller._running:
            assert time.monotonic() - killed < 1.0, "the job kept running after its client died"
            await asyncio.sleep(0.01)
        # More tasks of the job may reach the worker after in_flight was sampled (replicas pull
        # asynchronously): every one of them must have been cancelled, none completed.
        assert host.stats.cancelled >= in_flight and host.stats.completed == 0 and worker.finished == 0
