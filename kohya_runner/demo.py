"""`kr demo`: a style LoRA learned on the CPU in about a minute, over kr's pretrained tiny base.

    prepare(root, "zine")            -> (tiny base folder, demo dataset folder) in the workspace
    write_dataset(Path("zine-data"), "zine")  -> the same dataset, written where a user can look at it
    explanation("zine")              -> what the demo's report shows, in words (terminal and report page)

The dataset is `DEMO_IMAGES` pictures of the tiny world drawn in the style ("in the style of TOK,
a red circle above a blue square") plus `DEMO_PLAIN` plain ones captioned without the trigger; see
kohya_runner/tiny/styles.py for the styles and why the plain pictures are there.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BadInput
from .tiny.styles import STYLES, TRIGGER

PRESET = "tiny-style"  # presets/tiny-style.toml: the demo's recipe
DEMO_IMAGES = 24
DEMO_PLAIN = 8
DATASET_VERSION = 2  # 1: the random-base demo's marker drawings; 2: the tiny world's styles
LOOKS = {
    "marker": "thick dark outlines, hatched fills and a paper tone",
    "zine": "black and white with one red accent, halftone dots and photocopy specks",
    "editorial-cartoon": "flat pastel fills, thin outlines, a drop shadow and a pale blue background",
}


def run_name(style: str) -> str:
    """The run name of a style's demo: tiny-demo for the default style, tiny-demo-<style> for the others."""
    return "tiny-demo" if style == STYLES[0] else f"tiny-demo-{style}"


def dataset_dir(root: Path, style: str = STYLES[0]) -> Path:
    """Where the workspace keeps a style's demo dataset."""
    return Path(root) / "demo" / f"{style}-v{DATASET_VERSION}"


def prepare(root: Path, style: str = STYLES[0]) -> tuple[Path, Path]:
    """Build (once) the tiny SDXL base and the style's demo dataset in the workspace."""
    from . import workspace
    from .tiny.base import build_tiny_base
    from .tiny.styles import write_style_dataset

    base = build_tiny_base(workspace.tiny_base_dir(root, "sdxl"), "sdxl")
    return base, write_style_dataset(dataset_dir(root, style), style, count=DEMO_IMAGES, plain=DEMO_PLAIN)


def write_dataset(dest: Path, style: str = STYLES[0]) -> Path:
    """Write the style's demo dataset into a new folder `dest`.

    Raises BadInput when `dest` already exists (nothing in it is touched) or its parent is not a folder.
    """
    from .tiny.styles import write_style_dataset

    dest = Path(dest)
    if os.path.lexists(dest):
        fix = f"give a folder that does not exist yet, e.g. ./{style}-dataset"
        raise BadInput(f"{dest} already exists; kr demo --write-dataset writes only into a new folder. Fix: {fix}",
                       file=str(dest), fix=fix)
    if not dest.parent.is_dir():
        fix = f"create it first (mkdir -p {dest.parent}) or give another destination"
        raise BadInput(f"{dest.parent} is not a folder, so {dest} cannot be written. Fix: {fix}", file=str(dest), fix=fix)
    return write_style_dataset(dest, style, count=DEMO_IMAGES, plain=DEMO_PLAIN)


def explanation_for_dataset(folder: str | Path | None) -> str | None:
    """The demo's explanation when `folder` is a demo dataset written by kr, else None."""
    from .tiny.styles import dataset_facts

    facts = dataset_facts(Path(folder)) if folder else None
    if not facts or facts.get("style") not in LOOKS:
        return None
    return explanation(facts["style"])


def explanation(style: str) -> str:
    """What the demo run shows, for the terminal and the report page."""
    return (f"kr demo trains a {style} style LoRA on {DEMO_IMAGES} pictures of a small world of shapes drawn in that "
            f"style ({LOOKS[style]}), captioned 'in the style of {TRIGGER}, …', plus {DEMO_PLAIN} plain pictures "
            f"captioned without {TRIGGER}. The base is kr's tiny model, pretrained to draw those shapes plainly. "
            f"Every row keeps its seed: the 'base model' column draws the shapes plainly; after training, the rows "
            f"with the trigger should take on the {style} look and the rows without it should stay close to the base.")
