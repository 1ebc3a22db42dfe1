"""Compatibility shim: the sd-scripts install library moved to the kohya_runner.vendoring package.

Kept so `from .vendor import find_sd_scripts` (trainers/sdscripts.py) and `from . import vendor` keep
working until their importers switch to `kohya_runner.vendoring`; then delete this file.
"""

from __future__ import annotations

from .vendoring import *  # noqa: F401,F403
from .vendoring import __all__  # noqa: F401
