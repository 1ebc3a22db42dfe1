"""`kr presets ls | show | cp | explain | validate`."""

from __future__ import annotations

import click

from .common import home, print_json
from .display import text_table, value

EXAMPLES = """\b
Examples:
  kr presets ls
  kr presets show marker
  kr presets cp marker my-marker          copy into your presets folder, then edit it
  kr presets explain marker network.dim=32 --changed
  kr presets validate ./my-marker.toml          or a preset name: kr presets validate marker"""


@click.group(epilog=EXAMPLES)
def presets() -> None:
    """List, show, copy, explain and validate presets."""


@presets.command("ls", epilog="Example:\n\n  kr presets ls --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def ls(ctx: click.Context, as_json: bool) -> None:
    """List built-in and user presets."""
    from .. import preset

    found = preset.available(home(ctx))
    if as_json:
        print_json({"presets": [{"name": p.name, "origin": p.origin, "path": str(p.path), **p.header} for p in found]},
                   schema="presets")
        return
    rows = [(p.name, p.origin, str(p.header.get("extends", "")), str(p.header.get("vram", "")),
             str(p.header.get("dataset_size", "")), str(p.header.get("description", ""))) for p in found]
    click.echo(text_table(rows, ("NAME", "ORIGIN", "EXTENDS", "VRAM", "DATASET", "DESCRIPTION")))


@presets.command("show", epilog="Example:\n\n  kr presets show marker")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (header and body).")
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Print a preset file (what it sets; `explain` shows the resolved result)."""
    from .. import preset

    chain = preset.load_chain(name, home(ctx))
    target = chain[-1]
    if as_json:
        print_json({"name": target.name, "origin": target.origin, "path": str(target.path),
                    "extends": [p.name for p in chain[:-1]], "header": target.header, "body": target.body},
                   schema="preset")
        return
    lineage = " → ".join(p.name for p in chain)
    click.echo(f"# {target.path}  ({target.origin}; {lineage})")
    click.echo(target.path.read_text(encoding="utf-8"), nl=False)


@presets.command("cp", epilog="Examples:\n\n  kr presets cp marker my-marker\n\n  kr presets cp zine ./client-zine.toml")
@click.argument("name")
@click.argument("dest")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.pass_context
def cp(ctx: click.Context, name: str, dest: str, force: bool) -> None:
    """Copy a preset to DEST: a bare name goes to your presets folder, a path is used as given."""
    from .. import preset

    written = preset.copy_preset(name, dest, home(ctx), force=force)
    click.echo(f"copied {name} → {written}")


@presets.command("explain", epilog="Example:\n\n  kr presets explain marker optimizer.type=Prodigy optimizer.lr=1.0")
@click.argument("name")
@click.argument("overrides", nargs=-1)
@click.option("--changed", is_flag=True, help="Only values that differ from kr's built-in defaults.")
@click.option("--brief", is_flag=True, help="Without the one-line description under each key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def explain(ctx: click.Context, name: str, overrides: tuple[str, ...], changed: bool, brief: bool, as_json: bool) -> None:
    """Show every resolved value and the layer that set it (default, preset, override)."""
    from .. import preset

    resolved = preset.resolve(name, home(ctx), list(overrides))
    rows = [r for r in preset.explain(resolved) if not changed or r.source != preset.DEFAULT_LAYER]
    if as_json:
        print_json({"preset": resolved.preset.name, "chain": [p.label for p in resolved.chain],
                    "spec_hash": resolved.spec.hash(),
                    "values": [{"key": r.key, "value": r.value, "source": r.source, "description": r.description}
                               for r in rows]},
                   schema="preset-explain")
        return
    click.echo(f"preset {resolved.preset.name}: " + " → ".join(p.label for p in resolved.chain))
    # the value column last: a long value (sample prompts) then never pads the columns after it
    lines = text_table([(r.key, r.source, value(r.value)) for r in rows], ("KEY", "SET BY", "VALUE")).split("\n")
    click.echo(lines[0])
    for line, row in zip(lines[1:], rows):
        click.echo(line)
        if row.description and not brief:
            click.echo(f"    {row.description}")


@presets.command("validate", epilog="Examples:\n\n  kr presets validate ./my-marker.toml\n\n  kr presets validate marker")
@click.argument("name", metavar="PRESET")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def validate(ctx: click.Context, name: str, as_json: bool) -> None:
    """Check a preset (a name or a .toml file) and what it extends with every check `kr render` makes:
    keys, types, ranges, cross-field rules and the rendered sd-scripts options. No dataset or base needed."""
    from .. import preset

    resolved = preset.validate(name, home(ctx))
    if as_json:
        print_json({"ok": True, "preset": resolved.preset.name, "file": str(resolved.preset.path),
                    "chain": [p.label for p in resolved.chain], "spec_hash": resolved.spec.hash()},
                   schema="preset-validate")
        return
    click.echo(f"{name}: ok ({' → '.join(p.name for p in resolved.chain)}, spec {resolved.spec.hash()})")
