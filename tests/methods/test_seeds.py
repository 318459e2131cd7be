"""A job seed makes the *job* reproducible: every branch (and every step of a search) gets a
seed of its own derived from it, never the job seed itself (which would make N samples N
copies of one)."""

from __future__ import annotations

from typing import Any

from scaffolding_nats.client import JobClient
from scaffolding_nats.methods import BeamSearchController, BestOfNController, MajorityVoteController, load_registry
from scaffolding_nats.proto import GenerationTask, Job, SamplingParams, Subjects, Usage
from scaffolding_nats.runtime import Controller, TaskRunner, Worker, handles, run_request
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost

from .scripted import ScriptedWorker, seed_of


def boxed(task: GenerationTask) -> str:
    return f"Step 1: work {seed_of(task)}\n\nStep 2: \\boxed{{{seed_of(task) % 3}}}"


async def seeds_sent(controller: Controller, job_seed: int | None, gen: Any = boxed, **worker: Any) -> list[int]:
    """The seeds that reached the worker when ``controller`` ran one job seeded ``job_seed``."""
    scripted = ScriptedWorker(gen, **worker)
    runner = TaskRunner({"generation": scripted, "reward": scripted})
    defaults = {"seed": job_seed, "temperature": 0.7} if job_seed is not None else {}
    await run_request(controller.clone(), runner, prompt="Q", sampling_defaults=defaults)
    return [seed_of(t) for t in scripted.of(GenerationTask)]


async def test_n_samples_under_one_job_seed_are_n_different_requests() -> None:
    seeds = await seeds_sent(MajorityVoteController(sample_num=5), 1000)
    assert len(seeds) == 5
    assert len(set(seeds)) == 5, seeds  # the bug: five times seed 1000
    assert 1000 not in seeds


async def test_the_same_job_seed_reproduces_the_same_seeds() -> None:
    first = await seeds_sent(MajorityVoteController(sample_num=4), 7)
    again = await seeds_sent(MajorityVoteController(sample_num=4), 7)
    other = await seeds_sent(MajorityVoteController(sample_num=4), 8)
    assert sorted(first) == sorted(again)
    assert not set(first) & set(other)


async def test_job_seed_wins_over_base_seed_and_nests_without_repeats() -> None:
    inner = MajorityVoteController(sample_num=3)
    outer = MajorityVoteController(inner, sample_num=3, base_seed=0)
    seeds = await seeds_sent(outer, 42)
    assert len(seeds) == 9 and len(set(seeds)) == 9
    assert not set(seeds) & {0, 1, 2}


async def test_best_of_n_under_a_job_seed_samples_distinct_seeds() -> None:
    seeds = await seeds_sent(BestOfNController(sample_num=4), 3, reward=lambda t: [0.5] * len(t.candidates))
    assert len(set(seeds)) == 4


async def test_search_steps_get_distinct_seeds_under_a_job_seed() -> None:
    ctl = BeamSearchController(beam_width=2, expansions_per_beam=2, max_steps=3)
    seeds = await seeds_sent(
        ctl, 11, gen=lambda t: f"a step {seed_of(t)}", reward=lambda t: [[0.5] * len(s) for s in t.steps or []]
    )
    assert len(seeds) >= 8
    assert len(set(seeds)) == len(seeds), seeds


async def test_no_job_seed_leaves_sampling_to_the_backend() -> None:
    assert await seeds_sent(MajorityVoteController(sample_num=3), None) == [-1, -1, -1]


class SeedRecorder(Worker):
    """A generation backend that records the seed of every request it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.seeds: list[int | None] = []

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        self.seeds.append(task.seed)
        task.output_str = f"\\boxed{{{len(self.seeds)}}}"
        task.usage = Usage(prompt_tokens=1, completion_tokens=1)


async def test_a_job_seed_over_nats_reaches_the_worker_as_distinct_seeds(nc, prefix) -> None:  # type: ignore[no-untyped-def]
    subjects = Subjects(prefix)
    worker = SeedRecorder()
    async with (
        WorkerHost(nc, worker, tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        client = JobClient(nc, subjects=subjects)
        for _ in range(2):
            job = Job(method="majority_vote", prompt="Q", params={"sample_num": 5}, sampling=SamplingParams(seed=1000))
            await client.run(job, timeout=20)
    first, again = worker.seeds[:5], worker.seeds[5:]
    assert len(set(first)) == 5 and 1000 not in first
    assert sorted(first) == sorted(again)  # type: ignore[type-var]
