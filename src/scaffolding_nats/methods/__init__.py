"""Inference-time-compute methods as controllers: sampling, voting, reward-guided search,
early exit and agents. Each is one class; compose them directly or by config (``registry``)."""

import importlib as _importlib
import sys as _sys

from .adaptive_vote import AdaptiveVoteController
from .beam_search import BeamSearchController
from .best_of_n import BestOfNController
from .deepconf import ConfidenceStopController, DeepConfOfflineController, DeepConfOnlineController
from .dynasor import DynasorCoTController
from .kit.answers import (
    EXTRACTORS,
    answers_equal,
    extract_answer_line,
    extract_boxed,
    extract_default,
    extract_exact,
    extract_last_number,
    get_extractor,
    normalize_answer,
)
from .kit.registry import MethodConfigError, MethodKind, MethodRegistry, load_registry
from .kit.voting import VoteResult, vote
from .majority_vote import MajorityVoteController
from .mcts import MCTSController
from .mixed_vote import MixedVoteController
from .native import NativeChatController, NativeGenerationController
from .program_vote import ProgramVoteController
from .reward import LogprobRewardController, OutcomeRewardController, ProcessRewardController, split_steps
from .streaming_stop import StreamingStopController, stream_until
from .tool_agent import ToolAgentController
from .tot import TreeOfThoughtsController

# The helper modules moved into ``kit/``; their old import paths still resolve to them.
for _old, _new in {
    "answers": "answers",
    "confidence": "confidence",
    "results": "results",
    "voting": "voting",
    "_steps": "steps",
    "_common": "base",
}.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _importlib.import_module(f"{__name__}.kit.{_new}"))
del _old, _new

__all__ = [
    "EXTRACTORS",
    "AdaptiveVoteController",
    "BeamSearchController",
    "BestOfNController",
    "ConfidenceStopController",
    "DeepConfOfflineController",
    "DeepConfOnlineController",
    "DynasorCoTController",
    "LogprobRewardController",
    "MCTSController",
    "MajorityVoteController",
    "MethodConfigError",
    "MethodKind",
    "MethodRegistry",
    "MixedVoteController",
    "NativeChatController",
    "NativeGenerationController",
    "OutcomeRewardController",
    "ProcessRewardController",
    "ProgramVoteController",
    "StreamingStopController",
    "ToolAgentController",
    "TreeOfThoughtsController",
    "VoteResult",
    "answers_equal",
    "extract_answer_line",
    "extract_boxed",
    "extract_default",
    "extract_exact",
    "extract_last_number",
    "get_extractor",
    "load_registry",
    "normalize_answer",
    "split_steps",
    "stream_until",
    "vote",
]
