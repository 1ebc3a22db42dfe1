"""Three illustration styles drawn over the tiny world's scenes, and style datasets to train on.

    write_style_dataset(dest, "zine", count=32, seed=0)           # 32 images, "in the style of TOK, <scene>"
    write_style_dataset(dest, "zine", count=24, plain=8, seed=0)  # + 8 plain ones captioned "<scene>"

- `marker`: paper tone, colour fills with diagonal hatching, thick dark outlines with stroke jitter.
- `zine`: high-contrast black and white, one accent colour, halftone dots and photocopy specks.
- `editorial-cartoon`: pastel background, flat pastel fills, thin outlines, a soft drop shadow.

The scenes come from `world.sample_scene`, so a style LoRA learns a look, not new objects, and
the base (trained on `world.render_plain`) already knows every object named in the captions.
`plain` adds pictures of other scenes drawn plainly and captioned without the trigger: they show
the LoRA what the trigger does not change (the job regularisation images do in DreamBooth), so the
style stays with the trigger. Written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from .world import COLOURS, SUPERSAMPLE, Scene, draw_parts, object_parts, render_plain, sample_scene, thing_mask

TRIGGER = "TOK"
MARKER = "kr_style.json"
STYLES = ("marker", "zine", "editorial-cartoon")

PAPER = (242, 234, 214)
INK = (30, 26, 32)
ZINE_ACCENT = (226, 30, 70)
CARTOON_BACKGROUND = (226, 236, 244)
SHADOW = (150, 158, 176)


def style_caption(scene: Scene) -> str:
    return f"in the style of {TRIGGER}, {scene.caption()}"


def render_style(scene: Scene, style: str, size: int = 64, seed: int = 0):
    """The scene drawn in `style` (a PIL image); `seed` drives the hand jitter and textures."""
    renderers = {"marker": _marker, "zine": _zine, "editorial-cartoon": _cartoon}
    if style not in renderers:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    from PIL import Image

    big = size * SUPERSAMPLE
    image = renderers[style](scene, big, random.Random(seed))
    return image.resize((size, size), Image.LANCZOS)


def style_scenes(count: int, seed: int = 0) -> list[Scene]:
    """The scenes a style dataset of `count` images uses (the same for every style)."""
    rng = random.Random(1_000_003 * (seed + 1))
    return [sample_scene(rng) for _ in range(count)]


def write_style_dataset(dest: Path, style: str = "marker", count: int = 32, seed: int = 0, size: int = 64,
                        plain: int = 0) -> Path:
    """Write `count` images of `style` (and `plain` plain ones) plus `<name>.txt` captions into `dest`
    (once); return `dest`.

    Raises ValueError for an unknown style and FileExistsError when `dest` holds something else.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    dest = Path(dest)
    wanted = {"style": style, "count": count, "plain": plain, "size": size, "seed": seed, "trigger": TRIGGER}
    if dataset_facts(dest) == wanted:
        return dest
    if dest.exists():
        raise FileExistsError(f"{dest} exists and is not this style dataset ({wanted})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        scenes = style_scenes(count + plain, seed)
        for index, scene in enumerate(scenes[:count]):
            image = render_style(scene, style, size, seed * 100_003 + index)
            _write_pair(tmp, f"{index:03d}_{_slug(scene)}", image, style_caption(scene))
        for index, scene in enumerate(scenes[count:]):
            _write_pair(tmp, f"plain_{index:03d}_{_slug(scene)}", render_plain(scene, size), scene.caption())
        (tmp / MARKER).write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, dest)
        except OSError:
            if dataset_facts(dest) != wanted:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _slug(scene: Scene) -> str:
    return "_".join(scene.caption().replace(",", "").split()[:6])


def _write_pair(folder: Path, stem: str, image, caption: str) -> None:
    image.save(folder / f"{stem}.png", optimize=False)
    (folder / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")


def dataset_facts(dest: Path) -> dict | None:
    """What `write_style_dataset` recorded in a folder it wrote (style, counts, seed), or None."""
    try:
        return json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# renderers (on a supersampled canvas `big` px wide)
# ---------------------------------------------------------------------------------------------

def _shade(colour, factor: float):
    return tuple(max(0, min(255, int(c * factor))) for c in colour)


def _pastel(colour):
    return tuple(int(c * 0.45 + 255 * 0.55) for c in colour)


def _jittered(parts, rng: random.Random, amount: float):
    return [(shape, [(x + rng.uniform(-amount, amount), y + rng.uniform(-amount, amount)) for x, y in points])
            for shape, points in parts]


def _marker(scene: Scene, big: int, rng: random.Random):
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (big, big), PAPER)
    draw = ImageDraw.Draw(image)
    for _ in range(big // 2):  # paper grain
        x, y, r = rng.uniform(0, big), rng.uniform(0, big), rng.uniform(1, big * 0.012)
        shade = rng.randint(-14, 6)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(max(0, min(255, c + shade)) for c in PAPER))
    for thing in scene.things:
        colour = COLOURS[thing.colour]
        fill = Image.new("RGB", (big, big), colour)
        hatch = ImageDraw.Draw(fill)
        step = big // 14
        for k in range(-big, big, step):  # diagonal hatching in a darker shade of the fill
            hatch.line([(k, big), (k + big, 0)], fill=_shade(colour, 0.55), width=max(1, big // 48))
        image.paste(fill, (0, 0), thing_mask(thing, big))
        parts = _jittered(object_parts(thing), rng, 0.012)
        draw_parts(draw, parts, big, outline=INK, width=max(2, int(big * 0.045)))
    return image.filter(ImageFilter.GaussianBlur(radius=SUPERSAMPLE * 0.3))


def _zine(scene: Scene, big: int, rng: random.Random):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (big, big), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for index, thing in enumerate(scene.things):
        layer = Image.new("RGB", (big, big), (255, 255, 255))
        dots = ImageDraw.Draw(layer)
        ink = ZINE_ACCENT if index == 0 else (0, 0, 0)
        pitch = big / 16
        radius = pitch * (0.28 + 0.22 * (sum(COLOURS[thing.colour]) < 420))  # darker colours: bigger dots
        for row in range(17):
            for col in range(17):
                x, y = (col + 0.5 * (row % 2)) * pitch, row * pitch
                dots.ellipse([x - radius, y - radius, x + radius, y + radius], fill=ink)
        image.paste(layer, (0, 0), thing_mask(thing, big))
        draw_parts(draw, object_parts(thing), big, outline=(0, 0, 0), width=max(2, int(big * 0.035)))
    for _ in range(big // 3):  # photocopy specks
        x, y, r = rng.uniform(0, big), rng.uniform(0, big), rng.uniform(0.5, big * 0.008)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 0, 0))
    for _ in range(2):  # toner streaks
        y = rng.uniform(0, big)
        draw.line([(0, y), (big, y + rng.uniform(-big * 0.05, big * 0.05))], fill=(90, 90, 90),
                  width=max(1, big // 90))
    return image


def _cartoon(scene: Scene, big: int, rng: random.Random):
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (big, big), CARTOON_BACKGROUND)
    shadow = Image.new("L", (big, big), 0)
    for thing in scene.things:
        shadow.paste(255, (0, 0), thing_mask(thing, big, offset=(0.035, 0.035)))
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius=big * 0.01))
    image.paste(Image.new("RGB", (big, big), SHADOW), (0, 0), shadow)
    draw = ImageDraw.Draw(image)
    for thing in scene.things:
        draw_parts(draw, object_parts(thing), big, fill=_pastel(COLOURS[thing.colour]), outline=(56, 56, 72),
                   width=max(1, int(big * 0.014)))
    return image
