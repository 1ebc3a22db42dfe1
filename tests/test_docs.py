"""The README documents every command (as sqlite-utils' test_docs does for its CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kohya_runner.cli import COMMANDS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_in_the_readme(name):
    assert f"kr {name}" in README, f"the README never shows `kr {name}`"
