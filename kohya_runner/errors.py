"""The one exception type the CLI turns into a clean, traceback-free message."""

from __future__ import annotations


class KrError(Exception):
    """A problem the user can fix. `exit_code` follows the design card: 1 = run/check failed, 2 = bad input."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class BadInput(KrError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


class Failed(KrError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=1)
