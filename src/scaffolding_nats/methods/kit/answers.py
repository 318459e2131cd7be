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


_PLACEHOLDER = re.compile(
    r"^(?:<[^<>\d]*>|\[[^\[\]\d]*\]|\{[^{}\d]*\}|[nx]|number|(?:your|the|final)\s+(?:final\s+)?answer"
    r"|(?:the\s+)?(?:final\s+)?(?:number|value|result))$",
    re.IGNORECASE,
)
"""A template value copied back from a prompt ("<number>", "[answer]", "N", "X"), not an answer."""
_PLACEHOLDER_TOKEN = re.compile(r"<[^<>\d]*>|\[[^\[\]\d]*\]")
_GSM8K_MARK = re.compile(r"^\s*####\s*(.+)$", re.MULTILINE)
_MARKUP = re.compile(r"\\[()\[\]]|\*\*|__|`")


def is_placeholder(value: str) -> bool:
    """Whether an extracted value is a copied template (``<number>``, ``[answer]``, ``N``)."""
    return bool(_PLACEHOLDER.match(_clean(value)))


def _clean(value: str) -> str:
    """An answer value without markdown/LaTeX delimiters and surrounding punctuation."""
    value = _MARKUP.sub("", value)
    return re.sub(r"^[\s*:]+|[\s*.:;,!]+$", "", value)


def extract_answer_line(text: str) -> str | None:
    """The rest of the last "Answer: ..." (or "the answer is ...") line that is not a copied
    placeholder such as "Answer: <number>"."""
    for pattern in (_ANSWER_LINE, _ANSWER_IS):
        for match in reversed(list(pattern.finditer(text))):
            raw = match.group(1).splitlines()[0] if match.group(1) else ""
            value = _clean(raw)
            boxed = extract_boxed(value)
            if boxed:
                return boxed
            if value and not is_placeholder(value):
                without = _clean(_PLACEHOLDER_TOKEN.sub("", value))
                if without:
                    return without
    return None


def extract_last_number(text: str) -> str | None:
    matches = _NUMBER.findall(text)
    return matches[-1].replace(" ", "") if matches else None


def _number_in(value: str) -> str | None:
    """The number a short answer value states: itself, else the one after its last "=",
    else its first ("8 apples" -> "8"; "5 + 3 = 8" -> "8"; "$1,080.50 in all" -> "1,080.50")."""
    value = _clean(value)
    if parse_number(value) is not None:
        return value.replace("\\$", "").replace("$", "").strip()
    numbers = _NUMBER.findall(value.rsplit("=", 1)[-1])
    if numbers:
        return numbers[0].replace(" ", "")
    return None


def extract_number(text: str) -> str | None:
    """For tasks whose answer is a number, what models really write: the number of the last
    ``\\boxed{}``, else of the last "Answer: ..." line that is not a copied placeholder
    ("Answer: <number>"), else of a GSM8K-style ``#### 18`` line, else the text's last number.
    Units, ``$``, ``%``, thousands commas, markdown and trailing periods are dropped, so votes
    count "$18.", "18 dollars" and "**18**" as one answer."""
    candidates = [extract_boxed(text), extract_answer_line(text)]
    marks = _GSM8K_MARK.findall(text)
    candidates.append(marks[-1] if marks else None)
    for value in candidates:
        if value is not None:
            number = _number_in(value)
            if number is not None:
                return number
    return extract_last_number(_PLACEHOLDER_TOKEN.sub(" ", text))


def states_answer(text: str) -> bool:
    """Whether a text states an answer (``\\boxed{}``, an "Answer: ..." line that is not a
    placeholder, a ``####`` line) rather than merely containing numbers. A trace cut off by
    ``max_tokens`` has a last number, not an answer: votes let it abstain unless it states one."""
    return (
        extract_boxed(text) is not None or extract_answer_line(text) is not None or bool(_GSM8K_MARK.search(text))
    )


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
    s = s.replace("\\$", "$").replace("\\%", "%")
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
