from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaffolding_nats.errors import ScaffoldingError, UnknownMethod
from scaffolding_nats.methods import (
    BestOfNController,
    DynasorCoTController,
    MajorityVoteController,
    MethodConfigError,
    ProcessRewardController,
    load_registry,
)
from scaffolding_nats.methods.registry import MethodRegistry
from scaffolding_nats.proto import GenerationTask, StreamingGenerationTask

from .scripted import ScriptedWorker, run

REQUIRED = {
    "native",
    "generate",
    "chat",
    "majority_vote",
    "best_of_n",
    "dynasor",
    "deepconf_offline",
    "deepconf_online",
    "beam_search",
    "mcts",
    "tot",
    "tool_agent",
}


def test_default_registry_has_every_method_and_builds_fresh_trees() -> None:
    reg = load_registry()
    assert set(reg.names()) >= REQUIRED
    for name in reg.names():
        assert reg.build(name) is not reg.build(name)
    vote = reg.build("vote8_dynasor")
    assert isinstance(vote, MajorityVoteController) and vote.sample_num == 8
    assert isinstance(vote.sample_controller, DynasorCoTController)
    assert vote.sample_controller.chunk_size == 64
    bon = reg.build("best_of_4_prm")
    assert isinstance(bon, BestOfNController) and isinstance(bon.reward_controller, ProcessRewardController)


def test_build_from_declarative_config_and_overrides() -> None:
    reg = MethodRegistry()
    reg.register("g", {"method": "native", "params": {"temperature": 0.5}})
    ctl = reg.build_config(
        {
            "name": "vote8_dynasor",
            "method": "majority_vote",
            "params": {"sample_num": 8, "sampler": {"method": "dynasor", "params": {"chunk_size": 32}}},
        }
    )
    assert isinstance(ctl, MajorityVoteController)
    assert isinstance(ctl.sample_controller, DynasorCoTController) and ctl.sample_controller.chunk_size == 32
    reg.register("v", {"method": "majority_vote", "params": {"sample_num": 3, "sampler": "g"}})
    built = reg.build("v", {"sample_num": 5, "extractor": "boxed"})
    assert isinstance(built, MajorityVoteController) and built.sample_num == 5
    assert built.sample_controller.sampling == {"temperature": 0.5}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"method": "majority_vote", "params": {"sampler": {"method": "nope"}}}, "params.sampler.method"),
        (
            {
                "method": "majority_vote",
                "params": {"sampler": {"method": "dynasor", "params": {"chunk_size": "x"}}},
            },
            "params.sampler.params.chunk_size",
        ),
        ({"method": "majority_vote", "params": {"sample_num": 0}}, "params.sample_num"),
        ({"method": "best_of_n", "params": {"bogus": 1}}, "params.bogus"),
        (
            {
                "method": "best_of_n",
                "params": {"reward": {"method": "process_reward", "params": {"aggregate": "max"}}},
            },
            "params.reward.params.aggregate",
        ),
        ({"method": "dynasor", "params": {"temperature": -1}}, "params.temperature"),
        ({"params": {}}, "method"),
        ({"method": "native", "parms": {}}, "parms"),
        ({"method": "majority_vote", "params": {"sampler": 3}}, "params.sampler"),
        ({"method": "majority_vote", "params": {"sampler": "missing"}}, "params.sampler"),
        ({"method": "tot", "params": {"selection_strategy": "greedy"}}, "params.selection_strategy"),
        (
            {"method": "deepconf_online", "params": {"warmup_traces": 99, "num_traces": 4}},
            "params.warmup_traces",
        ),
    ],
)
def test_invalid_configs_name_the_bad_path(config: dict, path: str) -> None:
    with pytest.raises(MethodConfigError) as err:
        load_registry().build_config(config)
    assert err.value.path == path
    assert str(err.value).startswith(path)
    assert isinstance(err.value, ScaffoldingError) and isinstance(err.value, ValueError)
    assert err.value.to_info().details["path"] == path


def test_unknown_name_and_bad_override() -> None:
    reg = load_registry()
    with pytest.raises(UnknownMethod):
        reg.build("nope")
    with pytest.raises(MethodConfigError) as err:
        reg.build("vote8_dynasor", {"sampler": {"params": {"chunk_size": 0}}})
    assert err.value.path == "params.sampler.params.chunk_size"


def test_self_reference_is_rejected() -> None:
    reg = MethodRegistry()
    reg.configs["loop"] = {"method": "majority_vote", "params": {"sampler": "loop"}}
    with pytest.raises(MethodConfigError, match="refers to itself"):
        reg.build("loop")


def test_load_extra_file_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(
        json.dumps(
            {"methods": [{"name": "fast_vote", "method": "majority_vote", "params": {"sample_num": 2}}]}
        )
    )
    reg = load_registry(tmp_path / "m.json")
    assert "fast_vote" in reg.names() and "dynasor" in reg.names()
    (tmp_path / "m.yaml").write_text("methods:\n  only:\n    method: dynasor\n    params: {chunk_size: 8}\n")
    assert load_registry(tmp_path / "m.yaml", include_defaults=False).names() == ["only"]
    (tmp_path / "bad.yaml").write_text("methods:\n  bad:\n    method: dynasor\n    params: {chunk_sise: 8}\n")
    with pytest.raises(MethodConfigError) as err:
        load_registry(tmp_path / "bad.yaml")
    assert err.value.path == "methods.bad.params.chunk_sise"


async def test_registry_built_tree_runs_end_to_end() -> None:
    reg = load_registry()
    ctl = reg.build(
        "vote8_dynasor", {"sample_num": 3, "base_seed": 0, "sampler": {"params": {"chunk_size": 2}}}
    )
    worker = ScriptedWorker(lambda t: "a b c \\boxed{4}" if isinstance(t, StreamingGenerationTask) else "4}")
    out = await run(ctl, worker, "Q")
    assert out.output.answer == "4"
    assert len(worker.of(StreamingGenerationTask)) == 3
    assert all(t.max_tokens == 20 for t in worker.of(GenerationTask))
    assert set(out.usage_by_controller) == {"dynasor", "probe"}
