"""A calculator tool that cannot run code: it walks the expression's syntax tree and only knows
numbers, parentheses and arithmetic operators.

Sizes are bounded before work is done (expression length, integer bits, exponents), so an
input like ``9**9**9`` is refused instead of hanging the worker.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from ...proto.tasks import ToolDefinition
from .base import Tool, ToolInputError, ToolResult

Number = int | float

MAX_EXPRESSION_CHARS = 1000
MAX_INT_BITS = 4096
MAX_EXPONENT = 10_000

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}

DEFINITION = ToolDefinition(
    name="calculator",
    description=(
        "Evaluate an arithmetic expression exactly. Supports + - * / // % ** unary minus, "
        "parentheses, integers and decimals. Example: (17 * 23) - 4 ** 2"
    ),
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. 12 * (3 + 4)"}},
        "required": ["expression"],
    },
)


def _bits(x: Number) -> int:
    return x.bit_length() if isinstance(x, int) else 0


def _check_size(x: Number) -> Number:
    if isinstance(x, int) and x.bit_length() > MAX_INT_BITS:
        raise ToolInputError(f"result too large (over {MAX_INT_BITS} bits)")
    if isinstance(x, float) and not math.isfinite(x):
        raise ToolInputError("result is not a finite number")
    return x


def _power(base: Number, exp: Number) -> Number:
    if abs(exp) > MAX_EXPONENT:
        raise ToolInputError(f"exponent too large (limit {MAX_EXPONENT})")
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and _bits(base) * exp > MAX_INT_BITS * 2:
        raise ToolInputError(f"result too large (over {MAX_INT_BITS} bits)")
    result = base**exp
    if isinstance(result, complex):
        raise ToolInputError("fractional power of a negative number is not a real number")
    return result


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolInputError(f"only numbers are allowed, not {node.value!r}")
        return _check_size(node.value)  # a literal like 1e309 is already inf
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check_size(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        if isinstance(node.op, ast.Mult) and _bits(left) + _bits(right) > MAX_INT_BITS * 2:
            raise ToolInputError(f"result too large (over {MAX_INT_BITS} bits)")
        return _check_size(_BINARY[type(node.op)](left, right))
    raise ToolInputError(f"unsupported syntax: {type(node).__name__}")


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; ``ToolInputError`` for anything else."""
    text = expression.strip().replace("^", "**").replace("\u00d7", "*").replace("\u00f7", "/")
    if not text:
        raise ToolInputError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolInputError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
        return _eval(tree)
    except SyntaxError as exc:
        raise ToolInputError(f"not an arithmetic expression: {exc.msg}") from exc
    except ZeroDivisionError as exc:
        raise ToolInputError("division by zero") from exc
    except OverflowError as exc:
        raise ToolInputError("result too large") from exc
    except RecursionError as exc:
        raise ToolInputError("expression nested too deeply") from exc


def format_number(value: Number) -> str:
    """Whole floats print as integers (``8/2`` → ``4``): models compare answers as text."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


async def run(arguments: dict[str, Any]) -> ToolResult:
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        raise ToolInputError('expected arguments {"expression": "<arithmetic>"}')
    return ToolResult(result=format_number(evaluate(expression)))


CALCULATOR = Tool(definition=DEFINITION, run=run)
