"""Compatibility shim: the sd-scripts install library is the kohya_runner.vendoring package.

kr's own code imports kohya_runner.vendoring; the one importer left is tests/sdscripts/test_sdscripts_home.py
(`from kohya_runner import vendor`). Delete this file once it imports kohya_runner.vendoring.
"""

from __future__ import annotations

from .vendoring import *  # noqa: F401,F403
from .vendoring import __all__  # noqa: F401
