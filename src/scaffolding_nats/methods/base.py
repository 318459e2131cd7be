"""The public base of methods, under its documented name: what a method subclasses and the
helpers it uses (``MethodController``, ``SamplingMethod``, ``Slot``, ...). It lives in
``kit/base.py`` with the rest of the kit; this module is what plugins import."""

from .kit.base import *  # noqa: F403
from .kit.base import _jsonable  # noqa: F401  (a private name a star import skips)
