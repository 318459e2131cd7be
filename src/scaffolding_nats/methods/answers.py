"""Answer extraction and normalisation: votes are only as good as deciding that two texts
give the same answer ("1,000", "1000.0" and "1e3" are one answer; "-3" is not "3")."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction

Extractor = Callable[[str], str | None]
Normalizer = Callable[[str], str]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(r"(?:final\s+answer|answer)\s*(?:is)?\s*[:\uff1a]\s*(.+)", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\banswer\s+is\s+(.+)", re.IGNORECASE)
_NUMBER = re.compile(
    r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?|[-\u2212]?\.\d+"
)


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, nested braces included."""
    found: str | None = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    found = text[start:i].strip()
                    break
    return found or None


def extract_answer_line(text: str) -> str | None:
    """The rest of the last "Answer: ..." (or "the answer is ...") line."""
    for pattern in (_ANSWER_LINE, _ANSWER_IS):
        matches = list(pattern.finditer(text))
        if matches:
            value = matches[-1].group(1).splitlines()[0] if matches[-1].group(1) else ""
            value = re.sub(r"^[\s*]+|[\s*.]+$", "", value)
            boxed = extract_boxed(value)
            if boxed:
                return boxed
            if value:
                return value
    return None


def extract_last_number(text: str) -> str | None:
    matches = _NUMBER.findall(text)
    return matches[-1].replace(" ", "") if matches else None


def extract_number(text: str) -> str | None:
    """For tasks whose answer is a number: the number of the boxed or "Answer:" value
    ("Answer: 8 apples" -> "8"; "Answer: 5 + 3 = 8" -> "8", after the last "="), else the
    last number of the text. Votes then count "8" and "8 apples" as one answer."""
    value = extract_boxed(text) or extract_answer_line(text)
    if value is not None:
        if parse_number(value) is not None:
            return value
        numbers = _NUMBER.findall(value.rsplit("=", 1)[-1])
        if numbers:
            return numbers[0].replace(" ", "")
    return extract_last_number(text)


def extract_exact(text: str) -> str | None:
    value = text.strip()
    return value or None


def extract_default(text: str) -> str | None:
    """Boxed, else an answer line, else the last number."""
    return extract_boxed(text) or extract_answer_line(text) or extract_last_number(text)


EXTRACTORS: dict[str, Extractor] = {
    "default": extract_default,
    "boxed": extract_boxed,
    "answer_line": extract_answer_line,
    "last_number": extract_last_number,
    "number": extract_number,
    "exact": extract_exact,
}


def get_extractor(extractor: str | Extractor | None) -> Extractor:
    """An extractor by name (see ``EXTRACTORS``) or as given."""
    if extractor is None:
        return extract_default
    if callable(extractor):
        return extractor
    try:
        return EXTRACTORS[extractor]
    except KeyError:
        raise ValueError(f"unknown extractor {extractor!r} (known: {', '.join(EXTRACTORS)})") from None


_LATEX_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")
_TEXT_WRAP = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}")


def parse_number(value: str) -> Fraction | None:
    """The exact value of a numeric answer, or ``None`` when it is not a number."""
    s = value.strip().replace("\u2212", "-")
    s = s.replace("\\!", "").replace("\\,", "").replace(" ", "")
    s = s.strip("$").rstrip(".").rstrip("%")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    frac = _LATEX_FRAC.match(s.lstrip("-"))
    if frac:
        sign = -1 if s.startswith("-") else 1
        num, den = parse_number(frac.group(1)), parse_number(frac.group(2))
        if num is None or den is None or den == 0:
            return None
        return sign * num / den
    if "/" in s:
        num_s, _, den_s = s.partition("/")
        num, den = parse_number(num_s), parse_number(den_s)
        if num is None or den is None or den == 0:
            return None
        return num / den
    try:
        number = float(s)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    try:
        return Fraction(s)
    except ValueError:
        return Fraction(number)


def normalize_answer(value: str) -> str:
    """A canonical key for comparing answers: numbers by value, text case- and space-folded."""
    s = _TEXT_WRAP.sub(r"\1", value.strip())
    s = s.strip().strip("$").strip()
    number = parse_number(s)
    if number is not None:
        if number.denominator == 1:
            return str(number.numerator)
        return f"{float(number):.12g}"
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").lower()
    return s


def answers_equal(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return normalize_answer(a) == normalize_answer(b)
