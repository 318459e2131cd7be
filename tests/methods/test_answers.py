from __future__ import annotations

import pytest

from scaffolding_nats.methods.kit.answers import (
    answers_equal,
    extract_answer_line,
    extract_boxed,
    extract_default,
    extract_exact,
    extract_last_number,
    extract_number,
    get_extractor,
    normalize_answer,
)
from scaffolding_nats.methods.kit.voting import vote


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"first \boxed{1} then \boxed{-3}", "-3"),
        (r"\boxed{ {a}{b} }", "{a}{b}"),
        (r"\boxed{unclosed", None),
        ("no box", None),
    ],
)
def test_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_other_extractors() -> None:
    assert extract_answer_line("work\nAnswer: **12**.\nmore") == "12"
    assert extract_answer_line("Thus the answer is 7.") == "7"
    assert extract_answer_line("Final answer: \\boxed{9}") == "9"
    assert extract_answer_line("nothing") is None
    assert extract_last_number("x = -3.5 then 1,000 apples") == "1,000"
    assert extract_last_number("it was -3") == "-3"
    assert extract_last_number("half is 1/2") == "1/2"
    assert extract_last_number("none") is None
    assert extract_exact("  Paris \n") == "Paris"
    assert extract_exact("   ") is None
    assert extract_default("steps 3 and 4 \\boxed{5} and 6") == "5"
    assert extract_default("Answer: 8 apples, 9") == "8 apples, 9"
    assert extract_default("got 3 then 11") == "11"


def test_number_extractor_reduces_the_answer_to_its_number() -> None:
    assert extract_number("work\nAnswer: 8 apples, 9") == "8"
    assert extract_number("Answer: 5 + 3 = 8.") == "8"
    assert extract_number("so \\boxed{1,000}") == "1,000"
    assert extract_number("Answer: N\nit is 12") == "12"
    assert extract_number("got 3 then 11") == "11"
    assert extract_number("no numbers") is None
    assert get_extractor("number") is extract_number


def test_get_extractor() -> None:
    assert get_extractor("boxed") is extract_boxed
    assert get_extractor(None) is extract_default
    assert get_extractor(str.strip) is str.strip
    with pytest.raises(ValueError, match="unknown extractor"):
        get_extractor("nope")


@pytest.mark.parametrize("same", ["1,000", "1000.0", "1e3", "1000", "$1000$", " 1000. "])
def test_numeric_normalisation(same: str) -> None:
    assert normalize_answer(same) == "1000"


def test_normalisation_keeps_sign_and_fractions() -> None:
    assert normalize_answer("-3") == "-3"
    assert normalize_answer("\u22123") == "-3"
    assert not answers_equal("-3", "3")
    assert answers_equal("1/2", "0.5")
    assert answers_equal("\\frac{1}{2}", "0.5")
    assert answers_equal("-\\frac{3}{4}", "-0.75")
    assert answers_equal("Paris", " paris. ")
    assert answers_equal("\\text{Paris}", "Paris")
    assert not answers_equal(None, "1")
    assert normalize_answer("1,2") == "1,2"  # a list, not a thousands separator


def test_vote_plain_weighted_and_ties() -> None:
    r = vote(["1,000", None, "1000", "7"])
    assert (r.index, r.answer, r.key, r.tally) == (0, "1,000", "1000", {"1000": 2.0, "7": 1.0})
    assert vote(["7", "8"]).answer == "7"  # tie goes to the earliest
    assert vote(["7", "8", "8"], weights=[5.0, 1.0, 1.0]).answer == "7"
    assert vote([None, None]).index is None


# What Qwen2.5-Coder-0.5B and SmolLM2 really wrote on GSM8K-style problems (abridged).
MODEL_OUTPUTS = [
    ("Natalia sold 48 / 2 = 24 clips in May.\n48 + 24 = 72\n\nAnswer: 72", "72"),
    ("She earns 12 / 60 = $0.2 per minute, so 0.2 * 50 = $10.\n\nAnswer: <number>\n10", "10"),
    ("So he makes $448,000 in 20 weeks.\n\nAnswer: $448,000.", "448,000"),
    ("Therefore, the total cost is \\boxed{\\$1,080}.", "1,080"),
    ("The answer is 18 dollars.", "18"),
    ("**Answer:** 5 + 3 = 8 apples.", "8"),
    ("3 * 4 = 12 hours a week.\nAnswer: 12 hours\nAnswer: <number>", "12"),
    ("Step 1: 20 - 5 = 15\nStep 2: 15 * 2 = 30\n#### 30", "30"),
    ("The final answer is \\( 42 \\).", "42"),
    ("Answer: [number]\nShe has 7 left.", "7"),
    ("Answer: \\boxed{16\\%}", "16\\%"),
    ("He pays 1,200 + 300 = 1,500 in all. Answer: 1500.", "1500"),
    ("It drops to -4 degrees.\nAnswer: -4", "-4"),
    ("```python\nprint(5)\n```\nAnswer: N", "5"),
]


@pytest.mark.parametrize(("text", "expected"), MODEL_OUTPUTS)
def test_number_extractor_copes_with_what_models_write(text: str, expected: str) -> None:
    got = extract_number(text)
    assert got == expected
    assert normalize_answer(got) == normalize_answer(expected)


def test_answer_line_skips_copied_placeholders() -> None:
    from scaffolding_nats.methods.kit.answers import is_placeholder

    assert extract_answer_line("Answer: 9\n...\nAnswer: <number>") == "9"
    assert extract_answer_line("Answer: <number>") is None
    assert extract_answer_line("Answer: X") is None
    assert extract_answer_line("The answer is: Paris.") == "Paris"
    assert extract_default("so 10 in all.\nAnswer: <number>") == "10"
    assert all(is_placeholder(p) for p in ["<number>", "[answer]", "N", "{answer}", "your answer", "**<number>**"])
    assert not any(is_placeholder(p) for p in ["12", "<12>", "Paris", "A", "$5"])


@pytest.mark.parametrize("same", ["$18", "\\$18", "18.", "18.00", "$18.00.", "18"])
def test_money_and_trailing_period_are_one_answer(same: str) -> None:
    assert normalize_answer(same) == "18"
