"""`kr report RUN|SWEEP` and `kr compare RUN RUN …`: offline HTML evaluation sheets and PNG contact sheets."""

from __future__ import annotations

import click

from .common import print_json, recorded_ledger

REPORT_EPILOG = """\b
Examples:
  kr report tiny-demo-0001                 → <run folder>/report/index.html and sheet.png
  kr report 3 -o ~/deliveries/marker-eval  (a run's number, its id, or a unique prefix)
  kr report sweep-marker-0002              a sweep: every member's final samples side by side
  kr report tiny-demo-0001 --json

The page is self-contained and offline: inline CSS, no scripts, no fonts, images beside it."""

COMPARE_EPILOG = """\b
Examples:
  kr compare marker-0003 marker-0004
  kr compare 3 4 5 -o ./lr-comparison --json"""


def _done(result: dict, as_json: bool) -> None:
    if as_json:
        print_json(result, schema="report")
        return
    click.echo(f"wrote {result['html']}")
    if result.get("sheet"):
        layout = result["sheet_layout"]
        click.echo(f"      {result['sheet']}  ({layout['rows']} rows × {layout['columns']} columns)")
    for note in result.get("notes") or []:
        click.echo(f"note: {note}")
    click.echo(f"open it: xdg-open {result['html']}   ({result['seconds']:.1f} s)")


@click.command(epilog=REPORT_EPILOG)
@click.argument("ref", metavar="RUN|SWEEP")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Report folder (default: <run or sweep folder>/report).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_context
def report(ctx, ref, out, as_json):
    """An evaluation sheet: sample grid (base model, then every sampled epoch), trigger ablation, loss, config, timings."""
    from pathlib import Path

    from .. import report as report_mod

    root, _ = recorded_ledger(ctx)
    _done(report_mod.report(root, ref, Path(out).expanduser() if out else None), as_json)


@click.command(epilog=COMPARE_EPILOG)
@click.argument("refs", nargs=-1, required=True, metavar="RUN RUN …")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Report folder (default: <workspace>/reports/compare-…).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_context
def compare(ctx, refs, out, as_json):
    """Runs side by side: their final samples on the same prompts and seeds with a base row, and their losses."""
    from pathlib import Path

    from .. import report as report_mod

    root, _ = recorded_ledger(ctx)
    _done(report_mod.compare_report(root, list(refs), Path(out).expanduser() if out else None), as_json)
