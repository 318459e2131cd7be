"""Methods by name (``MethodRegistry``, ``load_registry``), under the import path services use;
it lives in ``kit/registry.py``."""

from .kit.registry import *  # noqa: F403
from .kit.registry import _hints, _merge  # noqa: F401  (private names a star import skips)
