"""Benchmark problems: GSM8K-style JSONL (``question``, ``answer`` and optionally ``id``) or the
generated arithmetic set of ``benchmarks.problems``; and how a method is asked to answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks import problems as generated
from scaffolding_nats.methods.kit.answers import extract_number, parse_number

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train400.jsonl"
"""``../shared/data/gsm8k/train400.jsonl`` beside the checkout: 400 GSM8K training problems."""

COT_INSTRUCTION = (
    "Solve the problem step by step. Then write the final answer on its own last line, "
    'starting with "Answer:".'
)
"""Reasoning, then an answer line. No template value is shown: models copy placeholders such
as "Answer: <number>" back instead of the number."""


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: float

    def prompt(self, style: str = "cot") -> str:
        """The user message: the bare question (methods that bring their own instructions,
        such as program-aided voting) or the question with the reasoning instruction."""
        if style == "plain":
            return self.question
        return f"{self.question}\n\n{COT_INSTRUCTION}"


class DatasetError(ValueError):
    """A problem file that cannot be used; says which line."""


def load_jsonl(path: Path) -> list[Problem]:
    out: list[Problem] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                value = parse_number(str(row["answer"]))
                if value is None:
                    raise ValueError(f"answer {row['answer']!r} is not a number")
                out.append(Problem(str(row.get("id", f"{path.stem}-{lineno}")), str(row["question"]), float(value)))
            except (KeyError, ValueError, TypeError) as exc:
                raise DatasetError(f"{path}:{lineno}: {exc}") from None
    return out


def load(spec: str) -> list[Problem]:
    """``synthetic`` (the generated set) or a JSONL path (default: GSM8K's slice)."""
    if spec == "synthetic":
        return [Problem(p.id, p.question, float(p.answer)) for p in generated.generate()]
    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"{path} does not exist (GSM8K lives in ../shared/data/gsm8k/ beside the checkout)")
    return load_jsonl(path)


def answer_of(text: str, method_answer: str | None = None) -> str | None:
    """The method's own answer (a vote's winner) when it gives one, else the text's; either
    way reduced to its number ("$18." -> "18")."""
    if method_answer is not None:
        return extract_number(method_answer) or method_answer
    return extract_number(text)


def is_correct(answer: str | None, expected: float) -> bool:
    if answer is None:
        return False
    value = parse_number(answer)
    return value is not None and abs(float(value) - expected) < 1e-6
