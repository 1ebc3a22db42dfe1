"""A small procedurally drawn dataset in one consistent style: bold marker strokes on paper.

`make_demo_dataset(dest)` draws ~16 images (a man thinking, a cup of coffee, an hourglass, a city
street, …) with Pillow and writes a caption `in the style of TOK, <subject>` next to each as
`<name>.txt`. Deterministic for a seed; written to a temporary folder and renamed into place.
Only Pillow is needed, so this is cheap to call from tests and `kr demo`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

TRIGGER = "TOK"
MARKER = "kr_demo.json"
SUPERSAMPLE = 4  # draw large, then downscale: smooth marker edges

PAPER = (244, 238, 224)
INK = (28, 26, 30)
ACCENTS = [(226, 92, 48), (38, 130, 150), (214, 170, 40)]


def make_demo_dataset(dest: Path, count: int = 16, size: int = 96, seed: int = 0) -> Path:
    """Write `count` images of `size`x`size` px plus captions into `dest` (once); return `dest`."""
    dest = Path(dest)
    wanted = {"count": count, "size": size, "seed": seed, "trigger": TRIGGER}
    if _marker(dest) == wanted:
        return dest
    if dest.exists():
        raise FileExistsError(f"{dest} exists and is not this demo dataset ({wanted})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        for index in range(count):
            subject, drawer = SUBJECTS[index % len(SUBJECTS)]
            rng = random.Random(seed * 100_003 + index)
            image = _draw(drawer, rng, size)
            stem = f"{index:03d}_{subject.replace(' ', '_')}"
            image.save(tmp / f"{stem}.png", optimize=False)
            (tmp / f"{stem}.txt").write_text(f"in the style of {TRIGGER}, {subject}\n", encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, dest)
        except OSError:
            if _marker(dest) != wanted:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def demo_captions() -> list[str]:
    """The captions the dataset uses, one per subject (handy for sample prompts)."""
    return [f"in the style of {TRIGGER}, {subject}" for subject, _ in SUBJECTS]


def _marker(dest: Path) -> dict | None:
    try:
        return json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------

class Marker:
    """Draws thick round-capped strokes on a supersampled canvas, with a little hand wobble."""

    def __init__(self, draw, rng: random.Random, scale: float, jitter: tuple[float, float]):
        self.draw = draw
        self.rng = rng
        self.scale = scale
        self.dx, self.dy = jitter

    def pt(self, x: float, y: float) -> tuple[float, float]:
        wobble = 0.004  # in canvas units (0..1)
        return ((x + self.dx + self.rng.uniform(-wobble, wobble)) * self.scale,
                (y + self.dy + self.rng.uniform(-wobble, wobble)) * self.scale)

    def width(self, w: float) -> int:
        return max(1, int(w * self.scale))

    def line(self, points, w=0.045, color=INK):
        pts = [self.pt(x, y) for x, y in points]
        width = self.width(w)
        self.draw.line(pts, fill=color, width=width, joint="curve")
        radius = width / 2
        for x, y in (pts[0], pts[-1]):  # round caps, like a felt tip
            self.draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)

    def ellipse(self, box, w=0.045, color=INK, fill=None):
        x0, y0 = self.pt(box[0], box[1])
        x1, y1 = self.pt(box[2], box[3])
        self.draw.ellipse([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
                          outline=color, width=self.width(w), fill=fill)

    def rect(self, box, w=0.045, color=INK, fill=None):
        x0, y0 = self.pt(box[0], box[1])
        x1, y1 = self.pt(box[2], box[3])
        self.draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
                            outline=color, width=self.width(w), fill=fill)

    def arc(self, cx, cy, r, start, end, w=0.045, color=INK, steps=24):
        points = [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)))
                  for a in (start + (end - start) * i / steps for i in range(steps + 1))]
        self.line(points, w, color)


def _draw(drawer, rng: random.Random, size: int):
    from PIL import Image, ImageDraw, ImageFilter

    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), PAPER)
    draw = ImageDraw.Draw(image)
    _paper_texture(draw, rng, big)
    accent = rng.choice(ACCENTS)
    jitter = (rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
    drawer(Marker(draw, rng, big, jitter), rng, accent)
    image = image.filter(ImageFilter.GaussianBlur(radius=SUPERSAMPLE * 0.35))
    return image.resize((size, size), Image.LANCZOS)


def _paper_texture(draw, rng: random.Random, big: int) -> None:
    for _ in range(big // 3):
        x, y = rng.uniform(0, big), rng.uniform(0, big)
        shade = rng.randint(-10, 6)
        color = tuple(max(0, min(255, c + shade)) for c in PAPER)
        r = rng.uniform(1, big * 0.01)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def _man_thinking(m: Marker, rng, accent):
    m.ellipse((0.36, 0.16, 0.62, 0.44), fill=accent)  # head
    m.line([(0.49, 0.44), (0.49, 0.52)])  # neck
    m.line([(0.26, 0.92), (0.30, 0.62), (0.49, 0.52), (0.68, 0.62), (0.72, 0.92)])  # shoulders
    m.line([(0.34, 0.74), (0.47, 0.58), (0.52, 0.42)], w=0.05)  # arm up to the chin
    for i in range(3):  # thought bubbles
        r = 0.025 + 0.015 * i
        cx, cy = 0.68 + 0.07 * i, 0.22 - 0.06 * i
        m.ellipse((cx - r, cy - r, cx + r, cy + r), w=0.03)


def _cup_of_coffee(m: Marker, rng, accent):
    m.line([(0.24, 0.40), (0.30, 0.82), (0.64, 0.82), (0.70, 0.40), (0.24, 0.40)], w=0.05)
    m.rect((0.30, 0.55, 0.64, 0.65), w=0.0, color=accent, fill=accent)
    m.arc(0.72, 0.56, 0.09, -80, 80, w=0.045)  # handle
    m.line([(0.18, 0.88), (0.78, 0.88)], w=0.04)  # saucer
    for x in (0.38, 0.48, 0.58):  # steam
        m.line([(x, 0.34), (x - 0.03, 0.26), (x + 0.02, 0.18), (x - 0.02, 0.10)], w=0.03)


def _hourglass(m: Marker, rng, accent):
    m.line([(0.28, 0.12), (0.72, 0.12)], w=0.06)
    m.line([(0.28, 0.88), (0.72, 0.88)], w=0.06)
    m.line([(0.33, 0.14), (0.47, 0.50), (0.33, 0.86)], w=0.045)
    m.line([(0.67, 0.14), (0.53, 0.50), (0.67, 0.86)], w=0.045)
    m.line([(0.38, 0.84), (0.50, 0.66), (0.62, 0.84)], w=0.05, color=accent)  # sand
    m.line([(0.50, 0.52), (0.50, 0.70)], w=0.02, color=accent)


def _city_street(m: Marker, rng, accent):
    m.line([(0.04, 0.80), (0.96, 0.80)], w=0.04)
    x = 0.06
    while x < 0.90:
        width = rng.uniform(0.14, 0.22)
        top = rng.uniform(0.18, 0.55)
        m.rect((x, top, x + width, 0.80), w=0.035)
        for wy in (top + 0.08, top + 0.18):
            if wy < 0.74:
                m.rect((x + 0.04, wy, x + 0.08, wy + 0.05), w=0.0, color=accent, fill=accent)
        x += width + 0.03
    m.line([(0.10, 0.90), (0.30, 0.90)], w=0.03)
    m.line([(0.45, 0.90), (0.65, 0.90)], w=0.03)


def _bicycle(m: Marker, rng, accent):
    m.ellipse((0.10, 0.50, 0.40, 0.80), w=0.04)
    m.ellipse((0.60, 0.50, 0.90, 0.80), w=0.04)
    m.line([(0.25, 0.65), (0.42, 0.42), (0.68, 0.42), (0.75, 0.65)], w=0.04, color=accent)
    m.line([(0.42, 0.42), (0.50, 0.65), (0.25, 0.65)], w=0.04, color=accent)
    m.line([(0.66, 0.42), (0.64, 0.32), (0.72, 0.30)], w=0.035)
    m.line([(0.40, 0.36), (0.48, 0.36)], w=0.04)


def _house_and_tree(m: Marker, rng, accent):
    m.rect((0.14, 0.50, 0.52, 0.86), w=0.045)
    m.line([(0.10, 0.52), (0.33, 0.26), (0.56, 0.52)], w=0.05)
    m.rect((0.28, 0.66, 0.38, 0.86), w=0.0, color=accent, fill=accent)
    m.line([(0.74, 0.86), (0.74, 0.56)], w=0.05)
    m.ellipse((0.60, 0.26, 0.88, 0.58), w=0.045)
    m.line([(0.04, 0.88), (0.96, 0.88)], w=0.035)


def _sleeping_cat(m: Marker, rng, accent):
    m.ellipse((0.18, 0.48, 0.78, 0.82), w=0.05, fill=accent)
    m.ellipse((0.60, 0.40, 0.86, 0.66), w=0.05, fill=PAPER)
    m.line([(0.63, 0.46), (0.66, 0.34), (0.71, 0.43)], w=0.04)
    m.line([(0.75, 0.43), (0.80, 0.34), (0.83, 0.46)], w=0.04)
    m.arc(0.68, 0.54, 0.03, 20, 160, w=0.02)
    m.arc(0.78, 0.54, 0.03, 20, 160, w=0.02)
    m.line([(0.20, 0.70), (0.10, 0.60), (0.14, 0.48)], w=0.045)  # tail


def _lighthouse(m: Marker, rng, accent):
    m.line([(0.36, 0.86), (0.42, 0.30), (0.58, 0.30), (0.64, 0.86)], w=0.045)
    m.line([(0.39, 0.58), (0.61, 0.58)], w=0.05, color=accent)
    m.line([(0.40, 0.44), (0.60, 0.44)], w=0.05, color=accent)
    m.rect((0.42, 0.18, 0.58, 0.30), w=0.04)
    m.line([(0.40, 0.18), (0.50, 0.10), (0.60, 0.18)], w=0.04)
    m.line([(0.62, 0.22), (0.92, 0.14)], w=0.025, color=accent)
    m.line([(0.38, 0.22), (0.08, 0.14)], w=0.025, color=accent)
    m.line([(0.04, 0.88), (0.30, 0.84), (0.70, 0.84), (0.96, 0.88)], w=0.035)


SUBJECTS = [
    ("a man thinking", _man_thinking),
    ("a cup of coffee", _cup_of_coffee),
    ("an hourglass", _hourglass),
    ("a city street", _city_street),
    ("a bicycle", _bicycle),
    ("a house and a tree", _house_and_tree),
    ("a sleeping cat", _sleeping_cat),
    ("a lighthouse", _lighthouse),
]
