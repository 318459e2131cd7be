"""The benchmark's report: a Markdown table (accuracy with Wilson intervals, paired McNemar
against greedy, cost per problem) and a chart of accuracy against tokens."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks.datasets import Problem
from benchmarks.stats import paired, wilson

from .runs import read_records
from .specs import MethodSpec
from .summary import Summary, reaggregations, samples_of, summarise, twins


def oracle_cell(s: Summary) -> str:
    """How often any of a method's samples was right (``—`` for single-sample methods)."""
    hits = [samples_of(r) for r in s.records]
    if not any(len(h) > 1 for h in hits):
        return "—"
    right = sum(any(h) for h in hits)
    lo, hi = wilson(right, s.n)
    return f"{right}/{s.n} = {right / max(s.n, 1):.1%} ({lo:.0%} to {hi:.0%})"


def provenance(summaries: Sequence[Summary]) -> str:
    """What the records themselves say they ran with: commits, splits and worker sampling."""
    import json

    records = [r for s in summaries for r in s.records]
    commits = sorted({r.commit for r in records if r.commit})
    splits = sorted({r.split for r in records if r.split})
    sampling = sorted({json.dumps(r.config.get("sampling_defaults"), sort_keys=True) for r in records if r.config})
    if not (commits or splits or sampling):
        return ""
    return (
        f" Records: commit {', '.join(commits) or '?'}; split {', '.join(splits) or '?'}; "
        f"worker sampling defaults {'; '.join(sampling) or '?'}."
    )


def markdown(summaries: Sequence[Summary], header: str, baseline: str = "greedy") -> str:
    base = next((s for s in summaries if s.key == baseline), None)
    lines = [
        header,
        "",
        "| method | accuracy | 95% CI (Wilson) | vs greedy: only greedy / only this, McNemar p "
        "| completion tokens / problem | wall s / problem | tasks / problem | errors | oracle: any sample right |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lo, hi = wilson(s.correct, s.n)
        errors = sum(r.error is not None for r in s.records)
        if base is None or s is base:
            versus = "—"
        else:
            pair = paired([r.correct for r in base.records], [r.correct for r in s.records])
            versus = f"{pair.difference:+.1%}: {pair.only_a} / {pair.only_b}, p = {pair.p_value:.3g}"
        lines.append(
            f"| {s.label} | {s.correct}/{s.n} = {s.accuracy:.1%} | {lo:.1%} to {hi:.1%} | {versus} "
            f"| {s.per_problem('completion_tokens'):.0f} | {s.per_problem('wall_s'):.1f} "
            f"| {s.per_problem('num_tasks'):.1f} | {errors} | {oracle_cell(s)} |"
        )
    spread = [diagnostics(s) for s in summaries]
    rows = [r for r in spread if r]
    if rows:
        lines += [
            "",
            "Samples of the multi-sample methods (each sample's own extracted answer):",
            "",
            "| method | samples | per-sample accuracy | abstained | distinct answers / problem | oracle |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    lines += goals(summaries, base)
    return "\n".join(lines)


def goals(summaries: Sequence[Summary], base: Summary | None) -> list[str]:
    """Issue 20's yardsticks, computed: the best method against greedy, the share of the
    gap between vote@8 and its oracle that the best method closes, and the adaptive vote's
    tokens against vote@8's."""
    vote = next((s for s in summaries if s.key == "vote8"), None)
    rest = [s for s in summaries if s is not base and s.n]
    if base is None or vote is None or not rest or not vote.n:
        return []
    best = max(rest, key=lambda s: (s.correct, -s.per_problem("completion_tokens")))
    pair = paired([r.correct for r in base.records], [r.correct for r in best.records])
    oracle = sum(any(samples_of(r)) for r in vote.records)
    gap = oracle - vote.correct
    closed = f"closes {(best.correct - vote.correct) / gap:.0%} of that gap" if gap else "there is no gap"
    out = [
        "",
        f"Yardsticks over these {vote.n} problems: the best method, {best.label.strip()}, is "
        f"{pair.difference * 100:+.1f} points against greedy (p = {pair.p_value:.3g}); vote@8 "
        f"{vote.correct} right, its samples' oracle {oracle}: {closed}.",
    ]
    adaptive = next((s for s in summaries if s.key.endswith("_adaptive") or s.key == "adaptive_vote"), None)
    if adaptive is not None and adaptive.n:
        saved = 1 - adaptive.per_problem("completion_tokens") / max(vote.per_problem("completion_tokens"), 1)
        out.append(
            f"The adaptive vote uses {saved:.0%} fewer completion tokens than vote@8 "
            f"({adaptive.correct} against {vote.correct} right)."
        )
    return out


def diagnostics(s: Summary) -> str:
    """Per-sample accuracy, abstentions and answer spread of a method's recorded samples."""
    from scaffolding_nats.methods.kit.answers import normalize_answer

    total = right = abstained = distinct = with_samples = 0
    for r in s.records:
        answers = r.extra.get("answers") or []
        if len(answers) < 2:
            continue
        with_samples += 1
        hits = samples_of(r)
        total += len(answers)
        right += sum(hits)
        abstained += sum(a is None for a in answers)
        distinct += len({normalize_answer(a) for a in answers if a is not None})
    if not with_samples:
        return ""
    return (
        f"| {s.label} | {total} | {right}/{total} = {right / total:.1%} | {abstained / total:.1%} "
        f"| {distinct / with_samples:.2f} | {oracle_cell(s)} |"
    )


def chart(summaries: Sequence[Summary], path: Path, title: str) -> None:
    """Accuracy against completion tokens per problem, one point per method with its 95%
    Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for s in summaries:
        if not s.n:
            continue
        lo, hi = wilson(s.correct, s.n)
        x = s.per_problem("completion_tokens")
        ax.errorbar([x], [s.accuracy], yerr=[[s.accuracy - lo], [hi - s.accuracy]], fmt="o", capsize=4, label=s.label)
        ax.annotate(f"{s.accuracy:.0%}", (x, s.accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("completion tokens per problem (log scale)")
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(specs: Sequence[MethodSpec], problems: Sequence[Problem], args: argparse.Namespace, header: str) -> str:
    records = read_records(Path(args.out)) if args.out and Path(args.out).exists() else []
    summaries = summarise(records, specs, [p.id for p in problems])
    for s in list(summaries):
        if s.key == "weighted_vote":
            at = summaries.index(s) + 1
            summaries[at:at] = twins(s)
    summaries.extend(reaggregations(summaries))
    table = markdown(summaries, header + provenance(summaries))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    if args.chart and summaries and summaries[0].n:
        title = f"{args.model}, {summaries[0].n} problems of {Path(args.data).name}"
        chart(summaries, Path(args.chart), title)
    return table
