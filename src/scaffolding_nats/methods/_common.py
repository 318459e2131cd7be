"""Compatibility import: the method base classes and helpers now live in the public
``scaffolding_nats.methods.base``."""

from .base import *  # noqa: F403
from .base import (  # noqa: F401  (private names a star import skips)
    SAMPLING_FIELDS,
    Isolated,
    MethodController,
    ParamError,
    SamplingMethod,
    _jsonable,
)
