"""The `kr` command line: thin click commands over the library, loaded lazily so `kr` starts fast."""

from __future__ import annotations

import errno
import importlib
import os
import sys

import click

from .. import __version__
from ..errors import KrError

# name → ("module:attribute", example). Each module imports only click at the top; the library
# loads when a command runs, so `kr --help` stays fast.
COMMANDS = {
    "base": ("kohya_runner.cli.base:base", "kr base info ~/models/sdxl_base_1.0.safetensors"),
    "compare": ("kohya_runner.cli.report:compare", "kr compare marker-0003 marker-0004"),
    "dataset": ("kohya_runner.cli.dataset:dataset", "kr dataset check ./imgs --preset marker"),
    "demo": ("kohya_runner.cli.demo:demo", "kr demo"),
    "doctor": ("kohya_runner.cli.doctor:doctor", "kr doctor marker --base sdxl.safetensors --smoke"),
    "presets": ("kohya_runner.cli.presets:presets", "kr presets explain marker optimizer.lr=2e-4"),
    "release": ("kohya_runner.cli.release:release", "kr release marker-0003 --best -o ~/deliveries --policy scrub"),
    "render": ("kohya_runner.cli.render:render", "kr render marker --dataset ./imgs --base sdxl.safetensors -o ./out"),
    "report": ("kohya_runner.cli.report:report", "kr report marker-0003   (or a sweep id)"),
    "review": ("kohya_runner.cli.review:review", "kr review --port 8765   (open the printed link)"),
    "run": ("kohya_runner.cli.run:run", "kr run marker --dataset ./imgs --base sdxl.safetensors"),
    "runs": ("kohya_runner.cli.runs:runs", "kr runs ls --status running"),
    "score": ("kohya_runner.cli.score:score", "kr score marker-0003 --max-images 8"),
    "sample": ("kohya_runner.cli.sample:sample", "kr sample marker-0003 --checkpoints all --strength 0.5,1.0"),
    "sweep": ("kohya_runner.cli.sweep:sweep", "kr sweep marker --grid optimizer.lr=1e-4,3e-4 --seeds 1,2 --dry-run"),
    "vendor": ("kohya_runner.cli.vendor:vendor", "kr vendor install --from ./sd-scripts-48d368f.tar.gz"),
}

EPILOG = """\b
Exit codes: 0 ok, 1 the run or check failed, 2 bad input.
Workspace: --home or KR_HOME (default ~/.local/share/kohya-runner).
Every command has --help with more examples."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target[0].split(":")
        from .common import accept_home_everywhere

        return accept_home_everywhere(getattr(importlib.import_module(module), attribute))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            rows.append((name, command.get_short_help_str(limit=70)))
            rows.append(("", f"e.g. {COMMANDS[name][1]}"))
        with formatter.section("Commands"):
            formatter.write_dl(rows, col_spacing=3)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            import difflib

            close = difflib.get_close_matches(args[0], COMMANDS, n=1) if args else []
            if close:
                raise click.UsageError(f"{e.message} Did you mean '{close[0]}'?", ctx) from None
            raise


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="kr")
@click.option("--home", envvar="KR_HOME", type=click.Path(file_okay=False), help="Workspace folder (env KR_HOME).")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, home: str | None, debug: bool) -> None:
    """kr: reproducible, offline LoRA training runs on top of kohya-ss/sd-scripts."""
    ctx.obj = {"home": home, "debug": debug}


def main(argv: list[str] | None = None) -> None:
    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    as_json = "--json" in (args[:args.index("--")] if "--" in args else args)
    try:
        cli.main(args=argv, prog_name="kr", standalone_mode=False)
    except KrError as e:
        if debug:
            raise
        _fail(f"Error: {e.message}", e.exit_code, as_json, error_object(e))
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        code = 2 if isinstance(e, click.UsageError) else e.exit_code
        if as_json:
            print_error_object({"error": e.format_message(), "field": None, "file": None,
                                "fix": "see `kr COMMAND --help`", "exit_code": code})
        e.show()
        sys.exit(code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except BrokenPipeError:
        # `kr runs ls | head`: the reader went away; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as e:  # a bug in kr: one line, and the way to see more
        if debug:
            raise
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # not a bug: the disk
            message = (f"cannot write {e.filename or 'to the workspace'}: {e.strerror}. Fix: free space on that disk, "
                       "or use --home elsewhere")
            _fail(f"Error: {message}", 1, as_json,
                  {"error": message, "field": None, "file": e.filename, "fix": "free space on that disk, or use --home elsewhere",
                   "exit_code": 1})
        message = (f"internal error in kr: {type(e).__name__}: {e}. Run again with --debug for the traceback, and "
                   "please report it.")
        _fail(f"Error: {message}", 1, as_json,
              {"error": message, "field": None, "file": None, "fix": None, "exit_code": 1})


def _fail(paragraph: str, exit_code: int, as_json: bool, obj: dict) -> None:
    """The error paragraph on stderr (always), the JSON error object on stdout with --json, and the exit code."""
    if as_json:
        print_error_object(obj)
    click.echo(paragraph, err=True)
    sys.exit(exit_code)


def error_object(error: KrError) -> dict:
    """A KrError as `--json` prints it: the message, the dotted spec field, the file and the fix (or null);
    a spec with several problems lists each under "problems"."""
    fix = error.fix
    if fix is None and "Fix: " in error.message:
        fix = error.message.rsplit("Fix: ", 1)[1].strip() or None
    obj = {"error": error.message, "field": error.field, "file": error.file, "fix": fix, "exit_code": error.exit_code}
    problems = getattr(error, "problems", None)
    if problems:
        obj["problems"] = [{"field": p.path, "message": p.message, "fix": p.fix or None} for p in problems]
    return obj


def print_error_object(obj: dict) -> None:
    from .common import print_json

    print_json(obj, schema="error")
