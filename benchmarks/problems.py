"""A deterministic set of arithmetic and word problems with known integer answers, for
measuring methods on a real model (``bench_methods``). No dataset download: the problems are
generated from a seeded RNG, so every run and every machine sees the same ones.

Two kinds, interleaved so that any prefix (``--limit N``) holds both in equal measure:

* ``arithmetic``: one operation on two operands (``+``, ``-``, ``*``, exact ``/``);
* ``word``: a short story that takes two or three steps (e.g. buy, give away, share).

Numbers stay small: the point is to compare methods on a weak CPU model, which should get
some of them right and some wrong, not to stump a strong one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from scaffolding_nats.methods.kit.answers import extract_number, parse_number

DEFAULT_SEED = 20240601
DEFAULT_COUNT = 240

INSTRUCTIONS = 'Think step by step. At the end, write "Answer:" followed by the number.'
"""Asks for reasoning and an "Answer:" line. Phrasings that show a placeholder ("Answer: N")
make SmolLM2 copy the placeholder; this one scored best of four tried on it."""


@dataclass(frozen=True)
class Problem:
    id: str
    kind: str  # "arithmetic" or "word"
    level: int  # 1: one-digit numbers, 2: larger ones and more steps
    question: str
    answer: int

    def prompt(self) -> str:
        """The user message: the problem and how to present the answer."""
        return f"{self.question}\n\n{INSTRUCTIONS}"


Maker = Callable[[random.Random, bool], tuple[str, int]]
"""Draws one problem; ``hard`` picks the larger number ranges."""


def _add(rng: random.Random, hard: bool) -> tuple[str, int]:
    hi = 99 if hard else 9
    a, b = rng.randint(hi // 10 + 1, hi), rng.randint(hi // 10 + 1, hi)
    return f"What is {a} + {b}?", a + b


def _sub(rng: random.Random, hard: bool) -> tuple[str, int]:
    a = rng.randint(30, 99) if hard else rng.randint(5, 18)
    b = rng.randint(1, a - 1)
    return f"What is {a} - {b}?", a - b


def _mul(rng: random.Random, hard: bool) -> tuple[str, int]:
    a, b = rng.randint(2, 9), (rng.randint(11, 25) if hard else rng.randint(2, 9))
    return f"What is {a} * {b}?", a * b


def _div(rng: random.Random, hard: bool) -> tuple[str, int]:
    b, q = rng.randint(2, 9), (rng.randint(11, 30) if hard else rng.randint(2, 9))
    return f"What is {b * q} / {b}?", q


ARITHMETIC: tuple[Maker, ...] = (_add, _sub, _mul, _div)

_NAMES = ("Tom", "Sara", "Ali", "Mia", "Ben", "Lena", "Omar", "Kate", "Ravi", "Emma")
_THINGS = ("apples", "marbles", "stickers", "cookies", "pencils", "stamps", "books", "coins")


def _buy_give(rng: random.Random, hard: bool) -> tuple[str, int]:
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = (rng.randint(10, 40), rng.randint(5, 30)) if hard else (rng.randint(2, 9), rng.randint(1, 6))
    c = rng.randint(1, a + b - 1)
    text = (
        f"{name} has {a} {thing}. {name} gets {b} more and then gives {c} away. How many {thing} does {name} have now?"
    )
    return text, a + b - c


def _boxes(rng: random.Random, hard: bool) -> tuple[str, int]:
    thing = rng.choice(_THINGS)
    per, boxes = (rng.randint(6, 12), rng.randint(3, 9)) if hard else (rng.randint(2, 5), rng.randint(2, 3))
    more = rng.randint(1, 20 if hard else 5)
    text = (
        f"A box holds {per} {thing}. There are {boxes} full boxes and {more} loose {thing}. "
        f"How many {thing} are there in total?"
    )
    return text, per * boxes + more


def _wages(rng: random.Random, hard: bool) -> tuple[str, int]:
    name = rng.choice(_NAMES)
    rate, hours = (rng.randint(8, 20), rng.randint(3, 8)) if hard else (rng.randint(2, 5), rng.randint(2, 3))
    days = rng.randint(2, 6) if hard else 2
    text = (
        f"{name} earns {rate} dollars per hour and works {hours} hours a day for {days} days. "
        f"How many dollars does {name} earn in total?"
    )
    return text, rate * hours * days


def _change(rng: random.Random, hard: bool) -> tuple[str, int]:
    name = rng.choice(_NAMES)
    price, count = (rng.randint(3, 15), rng.randint(2, 6)) if hard else (rng.randint(1, 4), 2)
    paid = price * count + rng.randint(1, 30 if hard else 5)
    text = (
        f"A notebook costs {price} dollars. {name} buys {count} notebooks and pays with {paid} dollars. "
        f"How much change, in dollars, does {name} get?"
    )
    return text, paid - price * count


def _share(rng: random.Random, hard: bool) -> tuple[str, int]:
    thing = rng.choice(_THINGS)
    friends, each = (rng.randint(3, 8), rng.randint(4, 12)) if hard else (2, rng.randint(2, 5))
    extra = rng.randint(1, 20 if hard else 3)
    text = (
        f"{friends * each} {thing} are shared equally among {friends} friends. Then each friend "
        f"is given {extra} more. How many {thing} does each friend have?"
    )
    return text, each + extra


def _trip(rng: random.Random, hard: bool) -> tuple[str, int]:
    speed, hours = (rng.randint(30, 90), rng.randint(2, 5)) if hard else (rng.randint(2, 9) * 10, 2)
    more = rng.randint(5, 60) if hard else rng.randint(1, 9)
    text = (
        f"A car drives at {speed} km per hour for {hours} hours and then drives {more} km more. "
        "How many km does it drive in total?"
    )
    return text, speed * hours + more


WORD: tuple[Maker, ...] = (_buy_give, _boxes, _wages, _change, _share, _trip)

_CYCLE = (
    ("arithmetic", ARITHMETIC, False),
    ("word", WORD, False),
    ("arithmetic", ARITHMETIC, True),
    ("word", WORD, True),
)


def generate(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[Problem]:
    """``count`` problems cycling easy arithmetic, easy word, hard arithmetic, hard word (so
    any prefix of a multiple of four is balanced); the same list for the same seed."""
    rng = random.Random(seed)
    problems: list[Problem] = []
    for i in range(count):
        kind, makers, hard = _CYCLE[i % len(_CYCLE)]
        question, answer = makers[(i // len(_CYCLE)) % len(makers)](rng, hard)
        level = 2 if hard else 1
        problems.append(Problem(id=f"p{i:03d}", kind=kind, level=level, question=question, answer=answer))
    return problems


def is_correct(answer: str | None, expected: int) -> bool:
    """Compare by numeric value ("42", "42.0", "$42" all match 42)."""
    if answer is None:
        return False
    value = parse_number(answer)
    return value is not None and value == expected


def answer_of(text: str, method_answer: str | None = None) -> str | None:
    """The method's own answer (e.g. a vote's winner) when it gives one, else the one in the
    text; either way reduced to its number ("8 apples" -> "8")."""
    if method_answer is not None:
        return extract_number(method_answer) or method_answer
    return extract_number(text)


if __name__ == "__main__":
    for p in generate(8):
        print(p.id, p.kind, p.level, p.answer, "|", p.question)
