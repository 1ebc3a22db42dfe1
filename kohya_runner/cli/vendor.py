"""`kr vendor install | env | bundle | status | verify | drift | tokenizers`: the pinned sd-scripts."""

from __future__ import annotations

import click

from .common import home, print_json
from .display import text_table

EPILOG = """\b
Examples:
  kr vendor install --from ~/Downloads/sd-scripts-48d368f.tar.gz   verified against the pinned git tree
  kr vendor env --torch 'torch==2.14.1 torchvision==0.29.1'          the trainer's venv (networked)
  kr vendor tokenizers --source ./open_clip_torch-3.3.0-py3-none-any.whl
  kr vendor bundle -o kr-bundle.tar                                   on a connected machine
  kr vendor install --bundle kr-bundle.tar                            on the air-gapped one
  kr vendor status
  kr vendor verify
  kr vendor drift

sd-scripts and its environment live in vendor/ of a kr checkout (or <home>/vendor for a wheel
install); KR_VENDOR_DIR moves both. KR_SD_SCRIPTS / KR_SD_PYTHON point kr at another checkout/python."""


@click.group(epilog=EPILOG)
def vendor() -> None:
    """Install and check the pinned sd-scripts, its trainer environment and the offline tokenizers."""


def _pin():
    from ..vendoring import load_pin

    return load_pin()


@vendor.command("install", epilog="""\b
Examples:
  kr vendor install --from ./sd-scripts                 a checkout folder (its .git is not copied)
  kr vendor install --from ./48d368f.tar.gz             a GitHub tarball or zip
  kr vendor install --git                               clone the pinned commit (needs network)
  kr vendor install --bundle kr-bundle.tar              checkout + trainer env + tokenizers, offline""")
@click.option("--from", "source", type=click.Path(), help="A checkout folder, or a .tar/.tar.gz/.zip of it.")
@click.option("--git", "use_git", is_flag=True, help="Fetch the pinned commit with git (the only networked way).")
@click.option("--bundle", "bundle_file", type=click.Path(), help="A file made by `kr vendor bundle` (no network).")
@click.option("--force", is_flag=True, help="Replace an existing install (kept until the new one is verified).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def install(ctx, source, use_git, bundle_file, force, as_json):
    """Install the pinned sd-scripts; its git tree is computed and compared with the pin before anything moves."""
    from pathlib import Path

    from .. import vendoring as lib
    from ..errors import BadInput

    chosen = [name for name, value in (("--from", source), ("--git", use_git), ("--bundle", bundle_file)) if value]
    if len(chosen) != 1:
        raise BadInput("give exactly one of --from PATH, --git or --bundle FILE. Fix: `kr vendor install --from "
                       "./sd-scripts.tar.gz` offline, or --git on a machine with network access")
    root, pin = home(ctx), _pin()
    dest = lib.default_sd_scripts_dir(root)
    if bundle_file:
        done = lib.install_bundle(Path(bundle_file).expanduser(), root, pin=pin, force=force)
        if as_json:
            print_json(done.to_dict(), schema="vendor-install-bundle")
            return
        _installed(done.sd_scripts, pin)
        click.echo(f"trainer environment: {done.env.path} (torch: {done.env.torch_spec}; from the bundle's wheelhouse)")
        for folder in done.tokenizers:
            click.echo(f"tokenizer: {folder}")
        return
    if use_git:
        result = lib.install_git(dest, pin.commit, repository=pin.repository, expected_tree=pin.tree, force=force)
    else:
        result = lib.install(Path(source).expanduser(), dest, expected_tree=pin.tree, force=force, commit=pin.commit)
    if as_json:
        print_json(result.to_dict(), schema="vendor-install")
        return
    _installed(result, pin)
    from ..vendoring import find_trainer_python

    if find_trainer_python(root) is None:
        click.echo("next: `kr vendor env` creates its trainer environment")


def _installed(result, pin) -> None:
    click.echo(f"✓ sd-scripts {pin.short} (v{pin.version}) installed at {result.path}: {result.files} files, "
               f"git tree {result.tree[:12]} = the pin")
    if result.replaced:
        click.echo("  (the previous install was replaced)")


@vendor.command("env", epilog="""\b
Examples:
  kr vendor env                                          torch for this machine (CUDA build if an NVIDIA GPU is found)
  kr vendor env --torch 'torch==2.14.1+cpu torchvision==0.29.1+cpu --extra-index-url https://download.pytorch.org/whl/cpu'
  kr vendor env --wheelhouse ./wheels                    no network: everything from a folder of wheels""")
@click.option("--wheelhouse", type=click.Path(file_okay=False), help="Install only from this folder of wheels (offline).")
@click.option("--torch", "torch_spec", help="pip requirement(s) and options for torch (default: chosen for this machine).")
@click.option("--python", "base_python", help="The Python that creates the venv (default: kr's own).")
@click.option("--force", is_flag=True, help="Rebuild an existing environment (restored if the rebuild fails).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def env(ctx, wheelhouse, torch_spec, base_python, force, as_json):
    """Create the trainer's venv: torch first, then sd-scripts' requirements.txt (pip output → <env>.kr-pip.log)."""
    from pathlib import Path

    from .. import vendoring as lib

    root = home(ctx)
    checkout = _require_checkout(root)
    spec = torch_spec or lib.choose_torch_spec()
    if not as_json:
        where = f"the wheelhouse {wheelhouse}" if wheelhouse else "pip's index (network)"
        click.echo(f"creating {lib.default_env_dir(root)} with {spec} from {where}; this can take a while…")
    made = lib.create_trainer_env(checkout, lib.default_env_dir(root), wheelhouse=Path(wheelhouse) if wheelhouse else None,
                                  torch_spec=spec, force=force, base_python=base_python)
    if as_json:
        print_json(made.to_dict(), schema="vendor-env")
        return
    click.echo(f"✓ trainer environment {made.path} ({made.python})")


def _require_checkout(root):
    from ..errors import BadInput
    from ..vendoring import default_sd_scripts_dir, find_sd_scripts

    checkout = find_sd_scripts(root)
    if checkout is None:
        raise BadInput(f"sd-scripts is not installed ({default_sd_scripts_dir(root)} does not exist). Fix: `kr vendor "
                       "install --from PATH|TARBALL` (or --git, or --bundle FILE) first")
    return checkout


@vendor.command("bundle", epilog="""\b
Examples:
  kr vendor bundle -o kr-bundle.tar
  kr vendor bundle -o kr-bundle.tar --find-links ./wheels --tokenizer-source ./wheels   from local wheels only""")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), required=True, help="The bundle file (.tar, or .tar.gz).")
@click.option("--from", "source", type=click.Path(file_okay=False), help="The checkout to pack (default: the installed one).")
@click.option("--torch", "torch_spec", help="torch for the TARGET machine (default: chosen for this one).")
@click.option("--find-links", "find_links", type=click.Path(file_okay=False), help="Take wheels only from this folder (no index).")
@click.option("--tokenizer-source", type=click.Path(), help="An open_clip_torch wheel or a folder holding one.")
@click.option("--python", "python", help="The Python whose pip downloads (match the target machine's version).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def bundle(ctx, out, source, torch_spec, find_links, tokenizer_source, python, as_json):
    """On a connected machine: sd-scripts + a wheelhouse + the tokenizer source in one file, for `install --bundle`."""
    from pathlib import Path

    from .. import vendoring as lib

    root = home(ctx)
    checkout = Path(source).expanduser() if source else _require_checkout(root)
    options = ["--no-index", "--find-links", str(Path(find_links).expanduser())] if find_links else []
    made = lib.bundle(Path(out).expanduser(), checkout, torch_spec=torch_spec or lib.choose_torch_spec(), pin=_pin(),
                      pip_options=options, python=python,
                      tokenizer_source=Path(tokenizer_source).expanduser() if tokenizer_source else None)
    if as_json:
        print_json(made.to_dict(), schema="vendor-bundle")
        return
    click.echo(f"✓ wrote {made.path} ({made.size / 2**20:.1f} MiB, {made.files} files)")
    click.echo(f"sha256 {made.sha256}")
    click.echo("carry it over, compare the sha256, then: kr vendor install --bundle FILE")


@vendor.command("status", epilog="Example:\n\n  kr vendor status --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx, as_json):
    """The pin, the installed checkout (verified), the trainer environment and the tokenizer cache."""
    from .. import vendoring as lib

    report = lib.status(home(ctx))
    if as_json:
        print_json(report, schema="vendor-status")
        return
    pin, sd, trainer, tok = report["pin"], report["sd_scripts"], report["trainer"], report["tokenizers"]
    rows = [("pin", f"sd-scripts {pin['commit'][:7]} (v{pin['version']}), git tree {pin['tree'][:12]}")]
    if sd["error"]:
        rows.append(("sd-scripts", f"✗ {sd['error']}"))
    elif not sd["installed"]:
        rows.append(("sd-scripts", f"✗ not installed ({sd['path']}); `kr vendor install --from PATH|TARBALL`"))
    else:
        origin = "KR_SD_SCRIPTS" if sd["from"] == "env" else "kr's install"
        rows.append(("sd-scripts", f"{sd['path']} ({origin}) {_tree_state(sd)}"))
    if trainer["error"]:
        rows.append(("trainer", f"✗ {trainer['error']}"))
    elif not trainer["python"]:
        rows.append(("trainer", "✗ no trainer environment; `kr vendor env`"))
    else:
        build = f"CUDA {trainer['cuda']} build" if trainer["cuda"] else "CPU build"
        torch = f"torch {trainer['torch']} ({build})" if trainer["torch"] else "✗ torch is not installed"
        rows.append(("trainer", f"{trainer['python']}: Python {trainer['python_version']}, {torch}"))
    state = "✓ complete" if tok["complete"] else "✗ incomplete; `kr vendor tokenizers --source WHEEL|DIR`"
    rows.append(("tokenizers", f"{tok['cache_dir']} {state}"))
    click.echo(text_table(rows))


def _tree_state(sd: dict) -> str:
    """The verdict on the checkout's tree, naming the first files that differ when a file list is known."""
    from ..gittree import Difference
    from ..vendoring.trees import difference_counts, first_differences

    if sd["verified"]:
        return "✓ matches the pin"
    if sd["verified"] is None:
        return "(tree not checked)"
    diff = Difference(sd["changed"], sd["missing"], sd["added"])
    if not sd["named"]:
        return "✗ does not match the pin (kr has no file list of the pinned tree to name the files that differ)"
    if not diff:
        return "✗ does not match the pin (same files as the pinned tree; `kr vendor verify` says why)"
    return f"✗ does not match the pin: {difference_counts(diff)} ({first_differences(diff)}); `kr vendor verify` names them"


@vendor.command("verify", epilog="Example:\n\n  kr vendor verify --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def verify(ctx, as_json):
    """Hash the installed checkout (git tree, in Python) and compare it with the pin; exit 1 naming what differs."""
    from .. import vendoring as lib
    from ..errors import Failed

    root, pin = home(ctx), _pin()
    result = lib.verify(_require_checkout(root), expected_tree=pin.tree)
    if as_json:
        print_json(result.to_dict(), schema="vendor-verify")
        if not result.ok:
            raise SystemExit(1)
        return
    if not result.ok:
        raise Failed(result.message(pin))
    click.echo(f"✓ {result.path} is sd-scripts {pin.short} (git tree {result.tree[:12]})")
    if result.extra:
        click.echo(f"  ignored, created by the trainer: {', '.join(result.extra[:8])}{' …' if len(result.extra) > 8 else ''}")


@vendor.command("drift", epilog="Example:\n\n  kr vendor drift --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def drift(ctx, as_json):
    """Import the installed sd-scripts' argument parsers and diff them with kr's pinned option manifest; exit 1 on drift."""
    from .. import vendoring as lib
    from ..errors import BadInput

    root = home(ctx)
    checkout = _require_checkout(root)
    python = lib.find_trainer_python(root)
    if python is None:
        raise BadInput("no trainer environment to import sd-scripts with. Fix: `kr vendor env`, or set KR_SD_PYTHON to "
                       "the python where sd-scripts' requirements are installed")
    result = lib.drift(checkout, python)
    if as_json:
        print_json(result.to_dict(), schema="vendor-drift")
    else:
        _show_drift(result, checkout)
    if not result.ok:
        raise SystemExit(1)


def _show_drift(result, checkout) -> None:
    if result.ok:
        click.echo(f"✓ {checkout}: every option of train_network.py and sdxl_train_network.py matches kr's manifest")
        return
    for script, option in result.added:
        click.echo(f"+ {script}: --{option} is new (kr's manifest does not know it)")
    for script, option in result.removed:
        click.echo(f"- {script}: --{option} is gone (kr may render it)")
    for change in result.changed:
        click.echo(f"~ {change.script}: --{change.option} {change.attribute} {change.old!r} → {change.new!r}")
    count = len(result.added) + len(result.removed) + len(result.changed)
    click.echo(f"✗ {count} difference(s) from the pinned option manifest: this is not the sd-scripts kr renders for. "
               "Fix: `kr vendor verify`, then reinstall the pinned commit with `kr vendor install ... --force`", err=True)


@vendor.command("tokenizers", epilog="""\b
Examples:
  kr vendor tokenizers --source ./open_clip_torch-3.3.0-py3-none-any.whl
  kr vendor tokenizers --source ./wheels        a folder holding that wheel (e.g. from `pip download`)
  kr vendor tokenizers                          from an installed open_clip package""")
@click.option("--source", type=click.Path(), help="An open_clip_torch wheel, a folder with one, or bpe_simple_vocab_16e6.txt.gz.")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), help="Cache folder (default: the workspace's tokenizers/).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tokenizers(ctx, source, out, as_json):
    """Write the CLIP tokenizer folders sd-scripts reads from --tokenizer_cache_dir, from open-clip's BPE vocabulary."""
    from pathlib import Path

    from ..tokenizers import build_tokenizer_cache, folder_for

    cache = folder_for(home(ctx), out)
    folders = build_tokenizer_cache(cache, source=Path(source).expanduser() if source else None)
    if as_json:
        print_json({"cache_dir": str(cache), "folders": [str(folder) for folder in folders]}, schema="vendor-tokenizers")
        return
    for folder in folders:
        click.echo(f"✓ {folder}")
    if not out:
        click.echo("rendered configs use this folder as --tokenizer_cache_dir")
