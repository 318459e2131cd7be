"""The benchmarked configurations: a served method, its parameter overrides, and how it is
sampled and prompted."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

NUMBER = {"extractor": "number"}
"""Answers are numbers: "$18." and "18 dollars" must vote (and score) as one answer."""


@dataclass(frozen=True)
class MethodSpec:
    """One benchmarked configuration: a registered method, its parameter overrides, whether
    its samples are drawn at ``--temperature`` (else greedy), and how it is prompted."""

    key: str
    label: str
    method: str
    params: dict[str, Any]
    sampled: bool
    prompt_style: str = "cot"
    needs: tuple[str, ...] = ()


def method_specs(args: argparse.Namespace) -> dict[str, MethodSpec]:
    n = args.vote_n
    vote = {"sample_num": n, **NUMBER}
    dynasor = {"chunk_size": args.chunk_size, "certainty_threshold": args.certainty, "probe_max_tokens": 20}
    deepconf = {"num_traces": 8, "warmup_traces": 4, "wave_size": 2, "consensus": 0.75, "conf_group_size": 64, **NUMBER}
    specs = [
        MethodSpec("greedy", "greedy (1 sample)", "native", {}, sampled=False),
        MethodSpec("vote", f"majority vote@{n}", "majority_vote", vote, sampled=True),
        MethodSpec(
            "weighted_vote",
            f"confidence-weighted vote@{n}",
            "majority_vote",
            {**vote, "weighting": "mean_logprob"},
            sampled=True,
        ),
        MethodSpec(
            "program_vote",
            f"program-aided vote@{args.program_n or n}",
            "program_vote",
            {"sample_num": args.program_n or n, "tool_name": args.python_tool},
            sampled=True,
            prompt_style="plain",
            needs=("python",),
        ),
        MethodSpec("vote8", "majority vote@8", "majority_vote", {"sample_num": 8, **NUMBER}, sampled=True),
        MethodSpec(
            "adaptive_vote",
            "adaptive vote (≤8, waves of 2: unbeatable lead or Beta ≥ 0.95)",
            "adaptive_vote",
            {"sample_num": 8, "wave_size": 2, "stop_rule": "either", "confidence": 0.95, **NUMBER},
            sampled=True,
        ),
        MethodSpec(
            "program_vote5",
            "program-aided vote@5",
            "program_vote",
            {"sample_num": 5, "tool_name": args.python_tool},
            sampled=True,
            prompt_style="plain",
            needs=("python",),
        ),
        MethodSpec(
            "mixed_vote",
            "mixed vote (CoT@8 + programs@5; an answer both reach wins)",
            "mixed_vote",
            {
                "rule": "agree",
                "cot": {"params": {"sample_num": 8, **NUMBER}},
                "program": {"params": {"sample_num": 5, "tool_name": args.python_tool}},
            },
            sampled=True,
            prompt_style="plain",
            needs=("python",),
        ),
        MethodSpec(
            "best_of_n",
            f"best-of-{args.bon_n} (Yes/No judge)",
            "best_of_n",
            {"sample_num": args.bon_n, **NUMBER},
            sampled=True,
            needs=("reward",),
        ),
        MethodSpec(
            "dynasor",
            f"Dynasor-CoT (chunk {args.chunk_size}, k={args.certainty})",
            "dynasor",
            {**dynasor, **NUMBER},
            sampled=False,
        ),
        MethodSpec(
            "deepconf_online",
            "DeepConf online (≤8 traces: 4 warm-up, then waves of 2 until 75% agree)",
            "deepconf_online",
            deepconf,
            sampled=True,
        ),
        MethodSpec(  # the paper's DeepConf-low: keep the top 10 %, cancel the rest early
            "deepconf_low",
            "DeepConf-low online (as above, threshold at the warm-up's 90th percentile)",
            "deepconf_online",
            {**deepconf, "confidence_percentile": 90},
            sampled=True,
        ),
    ]
    return {s.key: s for s in specs}
