"""The one exception type the CLI turns into a clean, traceback-free message (or, with --json, a JSON error
object on stdout: cli.error_object)."""

from __future__ import annotations


class KrError(Exception):
    """A problem the user can fix. `exit_code` follows the design card: 1 = run/check failed, 2 = bad input.
    `field` (a dotted spec path), `file` and `fix` say where and how, when known; the message says it too."""

    def __init__(self, message: str, exit_code: int = 2, *, field: str | None = None, file: str | None = None,
                 fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.field = field
        self.file = file
        self.fix = fix

    def __str__(self) -> str:
        return self.message


class BadInput(KrError):
    def __init__(self, message: str, *, field: str | None = None, file: str | None = None, fix: str | None = None):
        super().__init__(message, exit_code=2, field=field, file=file, fix=fix)


class Failed(KrError):
    def __init__(self, message: str, *, field: str | None = None, file: str | None = None, fix: str | None = None):
        super().__init__(message, exit_code=1, field=field, file=file, fix=fix)
