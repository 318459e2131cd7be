import asyncio
import time

from scaffolding_nats import Controller, GenerationTask, ParallelProcess, ScaffoldingLlm
from scaffolding_nats.proto import Subjects
from scaffolding_nats.transport import RemoteWorker, WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker


class Fan(Controller):
    def process(self, tasks, **kw):
        subs = [GenerationTask(input_str=tasks[0].input_str) for _ in range(8)]
        yield subs
        tasks[0].copy_results_from(subs[0])


async def test_smoke(nc, prefix):
    subjects = Subjects(prefix)
    async with WorkerHost(nc, SyntheticWorker(latency_s=0.2), tags=["generation"], subjects=subjects):
        remote = RemoteWorker(nc, subjects=subjects)
        async with ScaffoldingLlm(Fan(), {"generation": remote}) as llm:
            t = time.perf_counter()
            r = await llm.generate_async("a b c")
            assert r.outputs[0].text == "c b a"
            assert time.perf_counter() - t < 0.35
