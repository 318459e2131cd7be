"""The Scaffolding runtime: tasks run by workers, driven by generator controllers."""

from .collections import GenerationTokenCounter, TaskCollection, TaskTimer, with_task_collection
from .context import RequestContext, current_request, emit_partial, emit_progress
from .controller import Controller, ControllerGen, Output, ParallelProcess
from .driver import drive
from .llm import ScaffoldingLlm, ScaffoldingResult
from .request import Outcome, run_request
from .runner import TaskRunner
from .worker import Worker, handles, streams

__all__ = [
    "Controller",
    "ControllerGen",
    "GenerationTokenCounter",
    "Outcome",
    "Output",
    "ParallelProcess",
    "RequestContext",
    "ScaffoldingLlm",
    "ScaffoldingResult",
    "TaskCollection",
    "TaskRunner",
    "TaskTimer",
    "Worker",
    "current_request",
    "drive",
    "emit_partial",
    "emit_progress",
    "handles",
    "run_request",
    "streams",
    "with_task_collection",
]
