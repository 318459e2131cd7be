"""The parameter reference of every method kind, under the import path the protocol schema
uses; it lives in ``kit/reference.py``."""

from .kit.reference import *  # noqa: F403
