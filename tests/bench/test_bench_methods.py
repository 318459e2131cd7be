"""The benchmark's pure parts: statistics, the GSM8K loader, the summary/report and chart
(the runs themselves are long, model-backed and not CI tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.bench_methods import parse_args
from benchmarks.datasets import GSM8K, DatasetError, answer_of, is_correct, load, load_jsonl
from benchmarks.method_bench.report import chart, markdown
from benchmarks.method_bench.runs import Record, check_frozen, lacks_logprobs
from benchmarks.method_bench.specs import method_specs
from benchmarks.method_bench.summary import summarise
from benchmarks.stats import mcnemar_exact, paired, wilson


def test_wilson_matches_known_values() -> None:
    lo, hi = wilson(11, 30)
    assert (round(lo, 3), round(hi, 3)) == (0.219, 0.545)  # p = 0.367, centre 0.382 ± 0.163
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(10, 10)[1] == pytest.approx(1.0)


def test_exact_mcnemar() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # 0.03125: significant at 5%
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    pair = paired([True, True, False, False], [True, False, True, True])
    assert (pair.only_a, pair.only_b, pair.difference) == (1, 2, 0.25)
    with pytest.raises(ValueError):
        paired([True], [True, False])


def test_gsm8k_slice_loads_with_numeric_answers() -> None:
    if not GSM8K.exists():
        pytest.skip("no ../shared/data/gsm8k beside this checkout")
    problems = load(str(GSM8K))
    assert len(problems) == 400
    assert problems[0].question.startswith("Weng earns $12") and problems[0].answer == 10
    assert "Answer:" in problems[0].prompt() and "<" not in problems[0].prompt()
    assert problems[0].prompt("plain") == problems[0].question


def test_bad_jsonl_says_which_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "q", "answer": "7"}\n{"question": "q2", "answer": "seven"}\n')
    with pytest.raises(DatasetError, match=r"p.jsonl:2"):
        load_jsonl(path)


def test_answers_are_compared_by_number() -> None:
    assert is_correct(answer_of("so $1,080.\nAnswer: <number>"), 1080)
    assert is_correct(answer_of("junk", "18 dollars"), 18)
    assert not is_correct(None, 1)


def test_report_is_paired_over_common_problems(tmp_path: Path) -> None:
    specs = [method_specs(parse_args([]))[k] for k in ("greedy", "vote")]
    records = [
        Record("greedy", "g", "p1", 1, "1", True, completion_tokens=100, wall_s=1.0),
        Record("greedy", "g", "p2", 2, "3", False, completion_tokens=100, wall_s=1.0),
        Record("vote", "v", "p1", 1, "1", True, completion_tokens=500, wall_s=5.0),
        Record("vote", "v", "p2", 2, "2", True, completion_tokens=500, wall_s=5.0),
        Record("vote", "v", "p3", 3, "3", True, completion_tokens=500, wall_s=5.0),  # greedy has no p3
    ]
    summaries = summarise(records, specs, ["p1", "p2", "p3"])
    assert [s.n for s in summaries] == [2, 2]
    table = markdown(summaries, "header")
    assert "| majority vote@5 | 2/2 = 100.0% |" in table and "+50.0%: 0 / 1, p = 1" in table
    png = tmp_path / "c.png"
    chart(summaries, png, "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json.dumps(records[0].__dict__))["problem"] == "p1"


def test_weighted_vote_gets_twins_over_its_own_samples() -> None:
    from benchmarks.method_bench.summary import Summary, twins

    extra = {"answers": ["7", "9", "7", None, "9", "7", "5"], "weights": [0.1, 0.9, 0.1, None, 0.8, 0.2, 0.95]}
    record = Record("weighted_vote", "w", "p1", 9, "9", True, completion_tokens=700, extra=extra)
    weighted = Summary("weighted_vote", "w", [record])
    plain, first5, best = twins(weighted)
    assert (plain.records[0].completion_tokens, first5.records[0].completion_tokens) == (700, 500)
    assert plain.key == "weighted_vote_unweighted" and plain.records[0].answer == "7"  # 3 votes to 2
    assert first5.records[0].answer == "7"  # 7, 9, 7, -, 9: a tie, to the first seen
    assert best.records[0].answer == "5" and not best.records[0].correct  # the single most confident
    extra["answers"], extra["weights"] = ["4", "9"], [0.3, 0.6]  # fewer than 5: no first-5 row
    assert [t.records[0].answer for t in twins(weighted)] == ["4", "9"]


def test_a_weighted_method_without_log_probs_is_not_a_result() -> None:
    assert lacks_logprobs({"weights": [None, None], "answers": ["1", "2"]})
    assert lacks_logprobs({"trace_confidences": [0.0, 0.0]})
    assert not lacks_logprobs({"weights": [0.5, None]})
    assert not lacks_logprobs({"trace_confidences": [0.0, 1.2]})
    assert not lacks_logprobs({"votes": {"1": 2}})  # an unweighted method asks for none


def test_the_protocol_splits_the_slice_in_halves() -> None:
    from benchmarks.bench_methods import SPLITS, git_commit, select

    problems = list(range(400))
    dev, first = select(problems, parse_args(["--split", "dev", "--limit", "500"]))
    assert (dev[0], dev[-1], len(dev), first) == (0, 199, 200, 0)
    held, first = select(problems, parse_args(["--split", "heldout", "--offset", "5", "--limit", "10"]))
    assert (held[0], held[-1], first) == (205, 214, 205)  # job seeds follow file positions
    assert SPLITS["heldout"] == (200, 400)
    commit = git_commit()
    assert commit is None or len(commit.split("+")[0]) == 12


def _vote_record(problem: str, expected: float, answers: list[str | None], tokens: int = 800) -> Record:
    from scaffolding_nats.methods.kit.voting import vote

    winner = vote(answers).answer
    return Record("vote8", "majority vote@8", problem, expected, winner, is_correct(winner, expected),
                  completion_tokens=tokens, extra={"answers": answers})  # fmt: skip


def test_oracle_spread_and_replays() -> None:
    from benchmarks.method_bench.report import diagnostics, oracle_cell
    from benchmarks.method_bench.summary import Summary, adaptive_replay, mixed_replay, reaggregations

    vote8 = Summary("vote8", "majority vote@8", [
        _vote_record("p1", 4, ["4"] * 8),  # unanimous: the adaptive rule stops after 4
        _vote_record("p2", 9, ["7", "7", "9", "5", "7", "9", "9", "9"]),  # 9 wins at the end
        _vote_record("p3", 3, ["1", "2", None, "5", "6", "8", "1", "2"]),  # nobody right
        _vote_record("p4", 2, ["7", "7", "7", "2", "7", "7", "7", "7"]),
    ])  # fmt: skip
    program = Summary("program_vote5", "program vote@5", [
        Record("program_vote5", "p", p, e, None, False, completion_tokens=200, extra={"answers": a})
        for p, e, a in (("p1", 4, ["4"]), ("p2", 9, ["9", "5"]), ("p3", 3, ["3"]), ("p4", 2, ["2"]))
    ])  # fmt: skip
    assert oracle_cell(vote8).startswith("3/4 = 75.0%")
    assert "| 32 | 13/32 = 40.6% | 3.1% | 2.75 |" in diagnostics(vote8)
    adaptive = adaptive_replay(vote8, sample_num=8, wave_size=2)
    assert [len(r.extra["answers"]) for r in adaptive.records] == [4, 8, 8, 6]  # p4: 5 to 1 after 6, 2 left: unbeatable
    assert [r.completion_tokens for r in adaptive.records] == [400, 800, 800, 600]
    assert [r.correct for r in adaptive.records] == [True, True, False, False]
    mixed = mixed_replay(vote8, program, "agree")
    assert [r.correct for r in mixed.records] == [True, True, False, True]  # p4: "2" is shared, "7" is not
    assert len(mixed.records[0].extra["answers"]) == 9 and mixed.records[0].completion_tokens == 1000
    pooled = mixed_replay(vote8, program, "pooled")
    assert [r.correct for r in pooled.records] == [True, True, False, False]
    keys = [s.key for s in reaggregations([vote8, program])]
    assert keys == ["vote8_adaptive", "vote8_mixed_agree", "vote8_mixed_pooled"]

    from benchmarks.method_bench.report import goals

    greedy = Summary("greedy", "greedy", [Record("greedy", "g", p, 0, None, False) for p in ("p1", "p2", "p3", "p4")])
    lines = goals([greedy, vote8, program, adaptive, mixed, pooled], greedy)
    assert "the best method, mixed vote (agree)" in lines[1] and "+75.0 points" in lines[1]
    assert "vote@8 2 right, its samples' oracle 3: closes 100% of that gap" in lines[1]
    assert lines[2].startswith("The adaptive vote uses 19% fewer completion tokens than vote@8")


def test_a_resumed_run_keeps_the_frozen_configuration() -> None:
    config = {"model": "qwen", "sampling_defaults": {"top_k": 20}, "temperature": 0.7, "max_tokens": 384, "seed": 1000}
    held = [Record("greedy", "greedy", "p1", 1.0, "1", True, split="heldout", commit="abc", config=config)]
    args = parse_args(["--split", "heldout", "--out", "x.jsonl", "--resume"])
    args.config = dict(config)
    check_frozen(held, args)  # the same configuration, another commit: carries on
    args.config["sampling_defaults"] = {}
    with pytest.raises(SystemExit, match=r"sampling_defaults=\{'top_k': 20\}.*another --out"):
        check_frozen(held, args)
    args.config, args.split = dict(config), "dev"
    with pytest.raises(SystemExit, match="split='heldout'"):
        check_frozen(held, args)
