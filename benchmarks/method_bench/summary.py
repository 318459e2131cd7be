"""Summaries of the records: per method over the problems every method finished (paired), and
other aggregations of the very samples a weighted vote drew."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.datasets import answer_of, is_correct

from .runs import Record
from .specs import MethodSpec


@dataclass
class Summary:
    key: str
    label: str
    records: list[Record]

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.records)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def per_problem(self, name: str) -> float:
        return sum(getattr(r, name) for r in self.records) / max(self.n, 1)


def summarise(records: Iterable[Record], specs: Sequence[MethodSpec], problem_ids: Sequence[str]) -> list[Summary]:
    """One summary per method over the problems that every listed method has finished (so
    comparisons are always paired)."""
    by_method: dict[str, dict[str, Record]] = {s.key: {} for s in specs}
    for r in records:
        if r.method in by_method:
            by_method[r.method][r.problem] = r
    common = [p for p in problem_ids if all(p in by_method[s.key] for s in specs)]
    return [Summary(s.key, s.label, [by_method[s.key][p] for p in common]) for s in specs]


def derived(summary: Summary, key: str, label: str, pick: Any, first: int | None = None) -> Summary | None:
    """Another aggregation of the very samples a weighted vote drew (its recorded answers and
    weights): ``pick(answers, weights)`` returns the chosen answer. Aggregations compared with
    no sampling noise between them. With ``first``, only that many samples count, and so
    ``first / N`` of the tokens (samples are i.i.d.; per-sample counts are not recorded)."""
    records = []
    for r in summary.records:
        answers, weights = r.extra.get("answers"), r.extra.get("weights")
        if answers is None and r.error is None:
            return None
        answer = pick(answers, weights) if answers else None
        number = answer_of("", answer) if answer is not None else None
        share = min(first, len(answers)) / len(answers) if first and answers else 1.0
        records.append(
            Record(**{**asdict(r), "method": f"{r.method}_{key}", "answer": number,
                      "correct": is_correct(number, r.expected),
                      "completion_tokens": round(r.completion_tokens * share),
                      "prompt_tokens": round(r.prompt_tokens * share), "num_tasks": round(r.num_tasks * share)})
        )  # fmt: skip
    return Summary(f"{summary.key}_{key}", label, records)


def twins(summary: Summary, first: int = 5) -> list[Summary]:
    """Plain vote over the same samples, plain vote over the first ``first`` of them, and
    best-of-N by the generator's own mean token log-prob."""
    from scaffolding_nats.methods.kit.voting import vote

    def plain(answers: list[str | None], weights: Any) -> str | None:
        return vote(answers).answer

    def first_k(answers: list[str | None], weights: Any) -> str | None:
        return vote(answers[:first]).answer

    def most_confident(answers: list[str | None], weights: list[float] | None) -> str | None:
        pairs = enumerate(zip(answers, weights or [], strict=False))
        scored = [(w, -i) for i, (a, w) in pairs if a is not None and w is not None]
        return answers[-max(scored)[1]] if scored else None

    n = max((len(r.extra.get("answers") or []) for r in summary.records), default=0)
    rows = [derived(summary, "unweighted", f"  majority vote@{n} (same samples)", plain)]
    if n > first:
        label = f"  majority vote@{first} (first {first} of them)"
        rows.append(derived(summary, f"first{first}", label, first_k, first=first))
    rows.append(derived(summary, "best_logprob", f"  best-of-{n} by mean log-prob (same samples)", most_confident))
    return [r for r in rows if r is not None]


def samples_of(record: Record) -> list[bool]:
    """Whether each recorded sample's own answer was right (``[]`` when none were recorded)."""
    answers = record.extra.get("answers") or []
    return [a is not None and is_correct(answer_of("", a), record.expected) for a in answers]


Row = tuple[Record, str | None, float, list[Any]]


def _rebuilt(summary: Summary, key: str, label: str, rows: list[Row]) -> Summary:
    """Records of another aggregation: (source record, chosen answer, token share, answers)."""
    records = []
    for r, answer, share, answers in rows:
        number = answer_of("", answer) if answer is not None else None
        records.append(
            Record(**{**asdict(r), "method": key, "label": label, "answer": number,
                      "correct": is_correct(number, r.expected),
                      "completion_tokens": round(r.completion_tokens * share),
                      "prompt_tokens": round(r.prompt_tokens * share), "num_tasks": round(r.num_tasks * share),
                      "extra": {**r.extra, "answers": answers}})
        )  # fmt: skip
    return Summary(key, label, records)


def adaptive_replay(summary: Summary, **params: Any) -> Summary:
    """The adaptive vote's stopping rule replayed on vote@8's recorded samples, wave by wave
    (the served method draws the same seeded samples in the same order); tokens pro rata of
    the samples it would have drawn."""
    from scaffolding_nats.methods.adaptive_vote import AdaptiveVoteController
    from scaffolding_nats.methods.kit.voting import vote

    rule = AdaptiveVoteController(**params)
    rows = []
    for r in summary.records:
        answers = list(r.extra.get("answers") or [])
        n = len(answers) or 1
        drawn = len(answers)
        size = rule.first_wave
        while size < len(answers):
            if rule._decided(answers[:size]) is not None:
                drawn = size
                break
            size += rule.wave_size
        rows.append((r, vote(answers[:drawn]).answer, drawn / n, answers[:drawn]))
    return _rebuilt(summary, f"{summary.key}_adaptive", "  adaptive vote replayed on vote@8's samples", rows)


def mixed_replay(cot: Summary, program: Summary, rule: str = "agree") -> Summary:
    """The mixed vote re-aggregated from a CoT vote's and a program vote's recorded samples of
    the same problems (what ``mixed_vote`` draws for the same job); tokens of both."""
    from scaffolding_nats.methods.mixed_vote import mixed_choice

    by_problem = {r.problem: r for r in program.records}
    rows = []
    for r in cot.records:
        p = by_problem.get(r.problem)
        if p is None:
            continue
        c_answers, p_answers = list(r.extra.get("answers") or []), list(p.extra.get("answers") or [])
        key, _ = mixed_choice(c_answers, p_answers, rule=rule)  # type: ignore[arg-type]
        share = (r.completion_tokens + p.completion_tokens) / max(r.completion_tokens, 1)
        rows.append((r, key, share, c_answers + p_answers))
    label = f"  mixed vote ({rule}) of {cot.label}'s and {program.label}'s samples"
    return _rebuilt(cot, f"{cot.key}_mixed_{rule}", label, rows)


def reaggregations(summaries: Sequence[Summary]) -> list[Summary]:
    """Replays over recorded samples: the adaptive rule on vote@8's, the mixed vote on vote@8's
    and the program vote's (when both ran on the same problems)."""
    by_key = {s.key: s for s in summaries}
    out: list[Summary] = []
    vote8 = by_key.get("vote8")
    if vote8 is not None and vote8.n:
        out.append(adaptive_replay(vote8, sample_num=8, wave_size=2, stop_rule="either", confidence=0.95))
    program = by_key.get("program_vote5") or by_key.get("program_vote")
    if vote8 is not None and program is not None and vote8.n and program.n:
        out.append(mixed_replay(vote8, program, "agree"))
        out.append(mixed_replay(vote8, program, "pooled"))
    return out
