"""A method added outside the package (``examples/method_plugin``) is one class and one config
line: the registry imports it by path, builds it with its declared slots, and it runs, both
in-process and as a job of the controller service over a real nats-server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaffolding_nats.client import JobClient
from scaffolding_nats.methods import MajorityVoteController, MethodConfigError, load_registry
from scaffolding_nats.methods.registry import MethodKind, declared_kind
from scaffolding_nats.proto import GenerationTask, Job, Subjects
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

from .scripted import ScriptedWorker, run, seed_of

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "method_plugin"


@pytest.fixture
def plugin_path() -> Iterator[Path]:
    sys.path.insert(0, str(PLUGIN))
    try:
        yield PLUGIN / "methods.yaml"
    finally:
        sys.path.remove(str(PLUGIN))
        for name in [m for m in sys.modules if m.startswith("scaf_example_methods")]:
            del sys.modules[name]


async def test_plugin_loads_through_the_registry_and_runs(plugin_path: Path) -> None:
    reg = load_registry(plugin_path)
    assert "quorum_vote" in reg.names() and "majority_vote" in reg.names()
    ctl = reg.build("quorum_vote", {"base_seed": 0})
    assert type(ctl).__name__ == "QuorumVoteController" and ctl.sample_num == 8
    # Samples 0 and 1 agree: the vote stops after the first round of two.
    worker = ScriptedWorker(lambda t: f"so \\boxed{{{3 if seed_of(t) < 4 else seed_of(t)}}}")
    out = await run(ctl, worker, "Q")
    assert len(worker.of(GenerationTask)) == 2
    assert out.output.answer == "3" and out.output.metadata["votes"] == {"3": 2}
    # Disagreement keeps sampling until a clear majority.
    worker = ScriptedWorker(lambda t: f"\\boxed{{{0 if seed_of(t) == 0 else 7}}}")  # 1:1, then 1:3
    out = await run(reg.build("quorum_vote", {"base_seed": 0}), worker, "Q")
    assert len(worker.of(GenerationTask)) == 4 and out.output.answer == "7"


async def test_plugin_method_runs_as_a_job_over_nats(nc, prefix, plugin_path: Path) -> None:  # type: ignore[no-untyped-def]
    subjects = Subjects(prefix)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(plugin_path), subjects=subjects),
    ):
        client = JobClient(nc, subjects=subjects)
        assert "quorum_vote" in await client.methods()
        result = await client.run(Job(method="quorum_vote", prompt="one two 7"), timeout=20)
    assert result.answer == "7" and result.num_tasks == 2
    assert result.metadata["votes"] == {"7": 2} and result.metadata["index"] == 0


def test_built_in_kinds_are_declared_on_the_classes() -> None:
    assert declared_kind(MajorityVoteController) == "majority_vote"
    kind = MethodKind.of(MajorityVoteController)
    assert kind.slots == {"sampler": "sample_controller"} and kind.slot_defaults == {"sampler": {"method": "native"}}
    names = set(load_registry().kinds)
    assert {"native", "chat", "majority_vote", "program_vote", "best_of_n", "dynasor", "tool_agent"} <= names


def test_import_paths_are_checked_and_refused_in_job_params(plugin_path: Path) -> None:
    reg = load_registry(plugin_path)
    with pytest.raises(MethodConfigError, match=r"params.sampler.method: import paths are allowed in method files"):
        reg.build("majority_vote", {"sampler": {"method": "scaf_example_methods.quorum_vote:QuorumVoteController"}})
    with pytest.raises(MethodConfigError, match="is not a Controller class"):
        reg.build_config({"method": "pathlib:Path"})
    with pytest.raises(MethodConfigError, match="cannot import"):
        reg.build_config({"method": "no_such_module_xyz:Thing"})
