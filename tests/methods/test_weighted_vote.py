"""Confidence-weighted voting: each vote counts exp(mean token log-prob) of its trace, which
also breaks ties; the samples ask for the fewest log-probs (top-1)."""

from __future__ import annotations

import math

from scaffolding_nats.methods import MajorityVoteController
from scaffolding_nats.methods.majority_vote import fill_missing
from scaffolding_nats.proto import GenerationTask, TokenLogprob
from scaffolding_nats.runtime import handles

from .scripted import ScriptedWorker, run, seed_of

# seed -> (answer, per-token log-prob): two unsure traces say 7, two sure ones say 9.
TRACES = {0: ("7", -2.0), 1: ("9", -0.1), 2: ("7", -2.5), 3: ("9", -0.2), 4: ("7", -3.0)}


class LogprobWorker(ScriptedWorker):
    """Sets each token's own log-prob as given by the seed's trace."""

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        await ScriptedWorker.generate(self, task)
        _, lp = TRACES[seed_of(task)]
        if task.num_logprobs is not None:
            task.logprobs = [TokenLogprob(token=t.token, logprob=lp) for t in task.logprobs or []]


class NoLogprobWorker(ScriptedWorker):
    """A backend that ignores requests for log-probs."""

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        await ScriptedWorker.generate(self, task)
        task.logprobs = None


def text(task: GenerationTask) -> str:
    return f"so it is \\boxed{{{TRACES[seed_of(task)][0]}}}"


async def test_confidence_outweighs_a_bare_majority_and_asks_for_top1_only() -> None:
    plain = await run(MajorityVoteController(sample_num=5, base_seed=0), LogprobWorker(text), "Q")
    assert plain.output.answer == "7"  # 3 votes to 2
    worker = LogprobWorker(text)
    weighted = await run(MajorityVoteController(sample_num=5, base_seed=0, weighting="mean_logprob"), worker, "Q")
    assert {t.num_logprobs for t in worker.of(GenerationTask)} == {1}
    assert weighted.output.answer == "9"
    votes = weighted.output.metadata["votes"]
    assert math.isclose(votes["9"], math.exp(-0.1) + math.exp(-0.2), rel_tol=1e-5)
    assert math.isclose(votes["7"], math.exp(-2) + math.exp(-2.5) + math.exp(-3), rel_tol=1e-5)
    assert weighted.output.result.weights[1] == round(math.exp(-0.1), 6)


async def test_confidence_breaks_a_tie_instead_of_first_seen() -> None:
    # seeds 0..3: 7 (unsure), 9 (sure), 7 (unsure), 9 (sure): 2 to 2, first seen is 7
    plain = await run(MajorityVoteController(sample_num=4, base_seed=0), LogprobWorker(text), "Q")
    weighted = await run(
        MajorityVoteController(sample_num=4, base_seed=0, weighting="mean_logprob"), LogprobWorker(text), "Q"
    )
    assert (plain.output.answer, weighted.output.answer) == ("7", "9")


async def test_plain_vote_asks_for_no_logprobs() -> None:
    worker = LogprobWorker(text)
    await run(MajorityVoteController(sample_num=2, base_seed=0), worker, "Q")
    assert {t.num_logprobs for t in worker.of(GenerationTask)} == {None}


def test_missing_logprobs_get_the_mean_weight() -> None:
    assert fill_missing([0.5, None, 1.0]) == [0.5, 0.75, 1.0]
    assert fill_missing([None, None]) is None


async def test_best_of_n_by_the_generators_own_logprobs_calls_no_judge() -> None:
    from scaffolding_nats.methods import BestOfNController, LogprobRewardController
    from scaffolding_nats.proto import RewardTask

    worker = LogprobWorker(text)
    out = await run(
        BestOfNController(sample_num=5, base_seed=0, reward_controller=LogprobRewardController()), worker, "Q"
    )
    assert {t.num_logprobs for t in worker.of(GenerationTask)} == {1}
    assert worker.of(RewardTask) == []
    assert (out.output.answer, out.output.metadata["index"]) == ("9", 1)  # the surest trace, -0.1
    assert math.isclose(out.output.metadata["score"], math.exp(-0.1), rel_tol=1e-6)
    # A backend that returns no log-probs: scoring fails and the first sample stands.
    out = await run(
        BestOfNController(sample_num=2, base_seed=0, reward_controller=LogprobRewardController()),
        NoLogprobWorker(text),
        "Q",
    )
    assert out.output.metadata["fallback"] == "reward_failed"


async def test_a_trace_cut_off_at_max_tokens_abstains_unless_it_states_an_answer() -> None:
    from .scripted import Script

    def script(task: GenerationTask) -> Script:
        return {
            0: Script("Step 1. 4 + 4 = 8. Step 2. 8 * 2", finish_reason="length"),  # cut off: abstains
            1: Script("Step 1. 2 * 3 = 6. Step 2. 6 + 1", finish_reason="length"),  # cut off: abstains
            2: Script("so it is \\boxed{12}"),
            3: Script("The answer is \\boxed{7} and then some more words", finish_reason="length"),
        }[seed_of(task)]

    out = await run(MajorityVoteController(sample_num=4, base_seed=0, extractor="number"), ScriptedWorker(script), "Q")
    assert out.output.result.answers == [None, None, "12", "7"]
    assert out.output.answer == "12"  # a tie between what was stated, to the first seen
