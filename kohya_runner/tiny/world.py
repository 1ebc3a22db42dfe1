"""A small procedural world the tiny base is trained on: flat shapes in a few colours on plain paper.

    scene = sample_scene(random.Random(3))
    scene.caption()          # "a red circle above a blue square"
    render_plain(scene, 64)  # PIL image, flat fills, no outline

Six object kinds (circle, square, triangle, star, house, tree), six colours, one to three objects a
scene on a light, plain background. Every object is one colour (a tree's trunk and a house's roof
included), so "the dominant hue of the largest blob" is a fair test of what was drawn. Geometry is
kept apart from drawing (`object_parts`), so the style renderers in `styles.py` draw the same scenes.
Only Pillow is needed; deterministic for a `random.Random`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

KINDS = ("circle", "square", "triangle", "star", "house", "tree")
COLOURS = {
    "red": (214, 40, 40),
    "orange": (240, 132, 24),
    "yellow": (232, 196, 20),
    "green": (40, 156, 64),
    "blue": (36, 88, 212),
    "purple": (136, 56, 184),
}
BACKGROUNDS = ((250, 250, 250), (236, 236, 236), (246, 243, 236))
SUPERSAMPLE = 4  # draw large, then downscale: smooth edges at 64 px
OBJECT_COUNT_WEIGHTS = (0.5, 0.3, 0.2)  # one, two, three objects; singles teach "a red circle" best
RELATIONS = ("above", "below", "to the left of", "to the right of")


@dataclass(frozen=True)
class Thing:
    kind: str
    colour: str
    cx: float  # centre and size in canvas units (0..1)
    cy: float
    size: float

    def phrase(self) -> str:
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    background: tuple[int, int, int]
    relation: str = ""  # for two things: how the first stands to the second

    def caption(self) -> str:
        phrases = [thing.phrase() for thing in self.things]
        if len(phrases) == 1:
            return phrases[0]
        if len(phrases) == 2:
            return f"{phrases[0]} {self.relation} {phrases[1]}"
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def sample_scene(rng: random.Random, objects: int | None = None, kind: str | None = None,
                 colour: str | None = None) -> Scene:
    """One random scene; `objects`, `kind` and `colour` pin the count and the first thing."""
    count = objects or rng.choices((1, 2, 3), OBJECT_COUNT_WEIGHTS)[0]
    colours = rng.sample(list(COLOURS), count)
    kinds = [rng.choice(KINDS) for _ in range(count)]
    if colour is not None:
        colours = [colour] + [c for c in colours if c != colour][:count - 1]
    if kind is not None:
        kinds[0] = kind
    background = rng.choice(BACKGROUNDS)
    if count == 1:
        size = rng.uniform(0.46, 0.62)
        things = (Thing(kinds[0], colours[0], 0.5 + rng.uniform(-0.08, 0.08), 0.5 + rng.uniform(-0.08, 0.08),
                        size),)
        return Scene(things, background)
    if count == 2:
        return _pair(rng, kinds, colours, background)
    size = rng.uniform(0.24, 0.30)
    xs = (0.2, 0.5, 0.8)
    things = tuple(Thing(kinds[i], colours[i], xs[i] + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.15, 0.15),
                         size) for i in range(3))
    return Scene(things, background)


def _pair(rng: random.Random, kinds, colours, background) -> Scene:
    relation = rng.choice(RELATIONS)
    size = rng.uniform(0.32, 0.40)
    near, far = 0.27, 0.73  # the first thing's and the second thing's coordinate along the relation
    if relation in ("below", "to the right of"):
        near, far = far, near
    across = 0.5 + rng.uniform(-0.1, 0.1)
    if relation in ("above", "below"):
        first, second = (across, near), (across + rng.uniform(-0.08, 0.08), far)
    else:
        first, second = (near, across), (far, across + rng.uniform(-0.08, 0.08))
    things = (Thing(kinds[0], colours[0], *first, size), Thing(kinds[1], colours[1], *second, size))
    return Scene(things, background, relation)


# ---------------------------------------------------------------------------------------------
# geometry: each thing as a few primitives in canvas units
# ---------------------------------------------------------------------------------------------

def object_parts(thing: Thing) -> list[tuple[str, list[tuple[float, float]]]]:
    """("ellipse", [top-left, bottom-right]) and ("polygon", points) parts, in canvas units."""
    cx, cy, r = thing.cx, thing.cy, thing.size / 2
    if thing.kind == "circle":
        return [("ellipse", [(cx - r, cy - r), (cx + r, cy + r)])]
    if thing.kind == "square":
        s = r * 0.86
        return [("polygon", [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)])]
    if thing.kind == "triangle":
        return [("polygon", [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)])]
    if thing.kind == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return [("polygon", points)]
    if thing.kind == "house":
        body = [(cx - r * 0.7, cy - r * 0.1), (cx + r * 0.7, cy - r * 0.1), (cx + r * 0.7, cy + r),
                (cx - r * 0.7, cy + r)]
        roof = [(cx - r, cy), (cx, cy - r), (cx + r, cy)]
        return [("polygon", body), ("polygon", roof)]
    if thing.kind == "tree":
        trunk = [(cx - r * 0.16, cy + r * 0.2), (cx + r * 0.16, cy + r * 0.2), (cx + r * 0.16, cy + r),
                 (cx - r * 0.16, cy + r)]
        crown = ("ellipse", [(cx - r * 0.72, cy - r), (cx + r * 0.72, cy + r * 0.4)])
        return [("polygon", trunk), crown]
    raise ValueError(f"unknown kind {thing.kind!r}; expected one of {KINDS}")


def draw_parts(draw, parts, scale: float, fill=None, outline=None, width: int = 0, offset=(0.0, 0.0)) -> None:
    """Draw a thing's parts on a Pillow canvas `scale` px wide (fill and/or outline)."""
    dx, dy = offset
    for shape, points in parts:
        pts = [((x + dx) * scale, (y + dy) * scale) for x, y in points]
        if shape == "ellipse":
            draw.ellipse([pts[0], pts[1]], fill=fill, outline=outline, width=width)
        else:
            draw.polygon(pts, fill=fill, outline=outline, width=width)


def thing_mask(thing: Thing, big: int, offset=(0.0, 0.0)):
    """An "L" mask (255 inside) of one thing on a `big` px canvas."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (big, big), 0)
    draw_parts(ImageDraw.Draw(mask), object_parts(thing), big, fill=255, offset=offset)
    return mask


def render_plain(scene: Scene, size: int = 64):
    """The scene drawn flat: solid fills, no outline, plain background (the base's training look)."""
    from PIL import Image, ImageDraw

    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), scene.background)
    draw = ImageDraw.Draw(image)
    for thing in scene.things:
        draw_parts(draw, object_parts(thing), big, fill=COLOURS[thing.colour])
    return image.resize((size, size), Image.LANCZOS)
