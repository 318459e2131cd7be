"""Tools the tools worker can run, each a definition plus a coroutine."""

from .base import Tool, ToolFunction, ToolInputError, ToolResult
from .calculator import CALCULATOR, evaluate

__all__ = ["CALCULATOR", "Tool", "ToolFunction", "ToolInputError", "ToolResult", "evaluate"]
