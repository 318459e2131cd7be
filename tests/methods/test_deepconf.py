from __future__ import annotations

import pytest

from scaffolding_nats.errors import TaskFailed
from scaffolding_nats.methods import DeepConfOfflineController, DeepConfOnlineController
from scaffolding_nats.methods.kit.confidence import (
    bottom_percent,
    group_confidences,
    lowest_group,
    percentile,
    running_group_confidence,
    tail_confidence,
    token_confidences,
)
from scaffolding_nats.proto import Budget, GenerationTask, StreamingGenerationTask, TokenLogprob, TopLogprob

from .scripted import Script, ScriptedWorker, run, seed_of


def test_confidence_measures() -> None:
    lp = [
        TokenLogprob(
            token="a",
            logprob=-0.1,
            top=[TopLogprob(token="a", logprob=-0.1), TopLogprob(token="b", logprob=-3.9)],
        ),
        TokenLogprob(token="c", logprob=-0.5),
    ]
    assert token_confidences(lp) == [2.0, 0.5]
    assert token_confidences(lp, top_k=1) == [0.1, 0.5]
    conf = [4.0, 4.0, 1.0, 1.0, 4.0]
    assert group_confidences(conf, 2) == [4.0, 2.5, 1.0, 2.5]
    assert group_confidences(conf[:1], 2) == [4.0]
    assert lowest_group(conf, 2) == 1.0
    assert tail_confidence(conf, 2) == 2.5
    assert bottom_percent(conf, 2, 50) == 1.75
    assert running_group_confidence(conf, 2) == 2.5
    assert running_group_confidence(conf[:1], 2) is None
    assert percentile([5.0, 6.0, 7.0], 0) == 5.0
    assert percentile([5.0, 6.0, 7.0], 50) == 6.0
    assert percentile([5.0, 6.0, 7.0], 90) == pytest.approx(6.8)


OFFLINE = {0: ("1", 1.0), 1: ("1", 1.0), 2: ("1", 1.2), 3: ("2", 9.0), 4: ("2", 8.0)}


def offline_script(task: GenerationTask) -> Script:
    answer, conf = OFFLINE[seed_of(task)]
    return Script(f"think a lot \\boxed{{{answer}}}", conf=conf)


@pytest.mark.parametrize(
    ("policy", "answer"),
    [
        ("majority", "1"),
        ("weighted", "2"),
        ("top_percent", "2"),
        ("tail_filtered", "2"),
        ("bottom_window_filtered", "2"),
    ],
)
async def test_offline_vote_policies(policy: str, answer: str) -> None:
    worker = ScriptedWorker(offline_script)
    ctl = DeepConfOfflineController(5, conf_group_size=2, vote_policy=policy, base_seed=0)
    out = await run(ctl, worker, "Q")
    sent = worker.of(GenerationTask)
    assert sorted(seed_of(t) for t in sent) == [0, 1, 2, 3, 4]
    assert all(t.num_logprobs == 5 for t in sent)
    assert out.output.answer == answer
    assert out.output.metadata["answers_by_policy"] == {
        "majority": "1",
        "weighted": "2",
        "top_percent": "2",
        "tail_filtered": "2",
        "bottom_window_filtered": "2",
    }
    assert out.output.metadata["trace_confidences"] == [1.0, 1.0, 1.2, 9.0, 8.0]


async def test_offline_lowest_group_sees_a_confidence_dip() -> None:
    def script(task: GenerationTask) -> Script:
        if seed_of(task) == 0:  # confident on average, but one unsure stretch
            return Script("a b c d e \\boxed{5}", conf=[9.0, 9.0, 0.5, 0.5, 9.0, 9.0])
        return Script("a b c d e \\boxed{6}", conf=3.0)

    ctl = DeepConfOfflineController(
        2, conf_group_size=2, vote_policy="top_percent", top_percent=50, base_seed=0
    )
    out = await run(ctl, ScriptedWorker(script), "Q")
    assert out.output.answer == "6"
    ctl = DeepConfOfflineController(
        2, conf_group_size=2, confidence_policy="mean", vote_policy="top_percent", top_percent=50, base_seed=0
    )
    out = await run(ctl, ScriptedWorker(script), "Q")
    assert out.output.answer == "5"


async def test_offline_all_failed_and_no_answer() -> None:
    with pytest.raises(TaskFailed, match="all 2 traces failed"):
        await run(DeepConfOfflineController(2), ScriptedWorker(lambda t: RuntimeError("x")), "Q")
    out = await run(
        DeepConfOfflineController(2, base_seed=0), ScriptedWorker(lambda t: "no numbers here"), "Q"
    )
    assert out.output.metadata["fallback"] == "no_answer"
    assert out.output.text == "no numbers here"


STREAM_TEXT = " ".join(f"t{i}" for i in range(10))
ONLINE: dict[int, tuple[str, float | list[float]]] = {
    0: ("9", 5.0),
    1: ("9", 6.0),
    2: ("3", 7.0),  # warm-up
    3: ("3", [6.0, 6.0, 1.0]),  # dips after 2 tokens: cancelled
    4: ("9", 6.0),  # stays confident: finishes
    5: ("3", 4.0),  # below threshold from the start: cancelled
}


def online_script(task: GenerationTask) -> Script:
    answer, conf = ONLINE[seed_of(task)]
    return Script(f"{STREAM_TEXT} \\boxed{{{answer}}}", conf=conf)


async def test_online_learns_threshold_and_cancels_low_confidence_streams() -> None:
    worker = ScriptedWorker(online_script)
    ctl = DeepConfOnlineController(
        6, warmup_traces=3, confidence_percentile=0, conf_group_size=2, streaming_step=2, base_seed=0
    )
    out = await run(ctl, worker, "Q")
    warm = worker.of(GenerationTask)
    streams = worker.of(StreamingGenerationTask)
    assert sorted(seed_of(t) for t in warm) == [0, 1, 2]
    assert sorted(seed_of(t) for t in streams) == [3, 4, 5]
    assert all(s.streaming_step == 2 and s.num_logprobs == 5 for s in streams)
    by_seed = {seed_of(s): s.id for s in streams}
    assert sorted(worker.closed) == sorted([by_seed[3], by_seed[5]])
    assert worker.finished == [by_seed[4]]
    assert out.output.metadata["threshold"] == 5.0
    assert out.output.metadata["stopped_early"] == 2
    assert out.output.answer == "9"
    assert set(out.usage_by_controller) == {"sampling"}
    # Cancelled streams spent only what they generated before the decision.
    assert out.usage.completion_tokens == 3 * 11 + 11 + 4 + 2


async def test_online_budget_returns_vote_so_far() -> None:
    worker = ScriptedWorker(online_script)
    ctl = DeepConfOnlineController(
        6, warmup_traces=3, confidence_percentile=0, conf_group_size=2, streaming_step=2, base_seed=0
    )
    out = await run(ctl, worker, "Q", budget=Budget(max_tasks=4))
    assert out.stop_reason == "budget_tasks"
    assert out.output.answer == "9"
    assert out.output.metadata["partial"] is True


async def test_online_consensus_stops_sampling_in_waves() -> None:
    agree = {0: ("9", 5.0), 1: ("9", 6.0), 2: ("9", 7.0)}

    def script(task: GenerationTask) -> Script:
        answer, conf = agree.get(seed_of(task), ("3", 6.0))
        return Script(f"{STREAM_TEXT} \\boxed{{{answer}}}", conf=conf)

    # The warm-up agrees: no stream starts at all.
    worker = ScriptedWorker(script)
    ctl = DeepConfOnlineController(8, warmup_traces=3, consensus=0.95, wave_size=2, conf_group_size=2, base_seed=0)
    out = await run(ctl, worker, "Q")
    assert worker.of(StreamingGenerationTask) == []
    assert out.output.answer == "9"
    assert out.output.metadata["consensus_reached"] is True
    assert out.output.metadata["traces_started"] == 3
    # A split warm-up (2 to 1, weighted 11 to 7) and streams that answer 3: no consensus is
    # ever reached, so every trace runs, in waves of 2.
    agree[2] = ("3", 7.0)
    worker = ScriptedWorker(script)
    ctl = DeepConfOnlineController(
        7, warmup_traces=3, consensus=0.95, wave_size=2, confidence_percentile=0, conf_group_size=2, base_seed=0
    )
    out = await run(ctl, worker, "Q")
    assert sorted(seed_of(t) for t in worker.of(StreamingGenerationTask)) == [3, 4, 5, 6]
    assert out.output.metadata["consensus_reached"] is False
    assert out.output.metadata["traces_started"] == 7
    with pytest.raises(ValueError, match="consensus"):
        DeepConfOnlineController(4, consensus=1.5)


async def test_online_traces_without_an_answer_count_against_consensus() -> None:
    """One answer beside two traces that ran out of words is not 100 % agreement."""

    def script(task: GenerationTask) -> Script:
        if seed_of(task) in (1, 2):
            return Script("let me think about this step by step and", conf=6.0)
        return Script(f"{STREAM_TEXT} \\boxed{{9}}", conf=5.0)

    worker = ScriptedWorker(script)
    ctl = DeepConfOnlineController(
        5, warmup_traces=3, consensus=0.75, wave_size=2, confidence_percentile=0, conf_group_size=2, base_seed=0
    )
    out = await run(ctl, worker, "Q")
    assert sorted(seed_of(t) for t in worker.of(StreamingGenerationTask)) == [3, 4]
    assert out.output.metadata["traces_started"] == 5
    assert out.output.answer == "9"
