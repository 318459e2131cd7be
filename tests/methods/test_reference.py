"""The generated parameter reference covers every method kind and every served method."""

from __future__ import annotations

from scaffolding_nats.methods import load_registry
from scaffolding_nats.methods.reference import generate


def test_every_kind_and_served_method_has_a_parameter_reference() -> None:
    registry = load_registry()
    ref = generate(registry)
    assert set(ref["kinds"]) == set(registry.kinds)
    for name in registry.names():
        entry = ref["methods"][name]
        kind = ref["kinds"][entry["kind"]]
        assert set(entry["params"]) <= set(kind["properties"]), name
    vote = ref["kinds"]["majority_vote"]["properties"]
    assert vote["sample_num"]["type"] == "integer" and vote["sample_num"]["maximum"] == registry.limits["sample_num"]
    assert "sampler" in vote and ref["kinds"]["native"].get("x-sampling-fields")
