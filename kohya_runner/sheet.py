"""Images for the evaluation sheets: thumbnails and how much each one changed, copies beside the page,
and the contact sheet PNG (labels, cells). PIL and numpy are imported inside the functions."""

from __future__ import annotations

import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import atomic

DISPLAY_MAX = 192  # largest side of an image on the page, in CSS pixels
SHEET_MIN, SHEET_MAX = 128, 256  # a sheet cell's largest side



def cell_size(sample: Path) -> tuple[int, int]:
    """A sheet cell: small samples scaled up by a whole factor (crisp), large ones down to SHEET_MAX."""
    from PIL import Image

    with Image.open(sample) as image:
        width, height = image.size
    side = max(width, height)
    if side < SHEET_MIN:
        factor = math.ceil(SHEET_MIN / side)
        return width * factor, height * factor
    if side > SHEET_MAX:
        return max(1, round(width * SHEET_MAX / side)), max(1, round(height * SHEET_MAX / side))
    return width, height


def display_size(width: int, height: int) -> tuple[int, int]:
    side = max(width, height)
    if side <= DISPLAY_MAX:
        factor = max(1, DISPLAY_MAX // side)
        return width * factor, height * factor
    return max(1, round(width * DISPLAY_MAX / side)), max(1, round(height * DISPLAY_MAX / side))


def thumbnail(path: Path, size: tuple[int, int]):
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size == size:
            return image
        if size[0] % image.size[0] == 0 and size[1] % image.size[1] == 0:
            return image.resize(size, Image.Resampling.NEAREST)
        return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def thumbnails(paths: list[Path | None], size: tuple[int, int]) -> list:
    """Decoded and resized in threads (Pillow releases the GIL while decoding and resizing)."""
    def one(path):
        if path is None:
            return None
        try:
            return thumbnail(path, size)
        except OSError:
            return None  # a damaged or half-written file shows as a missing cell

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, paths))


def change(a, b) -> float | None:
    """Mean absolute pixel difference of two same-size thumbnails, as a fraction (0 = identical)."""
    if a is None or b is None or a.size != b.size:
        return None
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean() / 255.0)


def place(src: Path, dest: Path) -> None:
    """A sample beside the page: a hard link when the file system allows, else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


# ----------------------------------------------------------------------------------------------
# The PNG contact sheet.


@dataclass
class SheetLayout:
    width: int
    height: int
    rows: int
    columns: int
    cell: tuple[int, int]
    origin: tuple[int, int]  # top-left of the first cell
    pitch: tuple[int, int]  # distance between cells

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "rows": self.rows, "columns": self.columns,
                "cell": list(self.cell), "origin": list(self.origin), "pitch": list(self.pitch)}


PAD = 8
LABEL_WIDTH = 300
TITLE_HEIGHT = 36
LINE = 16


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if font.getlength(trial) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    for i, line in enumerate(lines):  # a single word wider than the cell
        while font.getlength(line) > width and len(line) > 1:
            line = line[:-2] + "…"
        lines[i] = line
    return lines


def compose_sheet(title: str, column_labels: list[list[str]], row_labels: list[list[str]], thumbs: list[list],
                  cell: tuple[int, int], out: Path) -> SheetLayout:
    """A grid of thumbnails: a title bar, column labels on top, row labels on the left."""
    from PIL import Image, ImageDraw

    font, bold = _font(13), _font(15)
    column_width = cell[0] - 4
    wrapped_columns = [[line for text in label for line in wrap(text, font, column_width, 3)][:4]
                       for label in column_labels]
    header = PAD * 2 + LINE * max([len(c) for c in wrapped_columns] + [1])
    origin = (LABEL_WIDTH + PAD, TITLE_HEIGHT + header)
    pitch = (cell[0] + PAD, cell[1] + PAD)
    width = origin[0] + len(column_labels) * pitch[0]
    height = origin[1] + len(row_labels) * pitch[1]
    sheet = Image.new("RGB", (max(width, LABEL_WIDTH + 200), height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.rectangle((0, 0, sheet.width, TITLE_HEIGHT - 1), fill=(34, 40, 49))
    draw.text((PAD, 9), title, fill=(255, 255, 255), font=bold)
    for c, lines in enumerate(wrapped_columns):
        x = origin[0] + c * pitch[0]
        for i, line in enumerate(lines):
            draw.text((x, TITLE_HEIGHT + PAD + i * LINE), line, fill=(30, 30, 30), font=font)
    max_lines = max(1, cell[1] // LINE)
    for r, label in enumerate(row_labels):
        y = origin[1] + r * pitch[1]
        if r % 2 == 0:
            draw.rectangle((0, y - PAD // 2, sheet.width, y + cell[1] + PAD // 2 - 1), fill=(244, 246, 248))
        lines = [line for text in label for line in wrap(text, font, LABEL_WIDTH - 2 * PAD, max_lines)][:max_lines]
        for i, line in enumerate(lines):
            draw.text((PAD, y + i * LINE), line, fill=(30, 30, 30) if i else (0, 0, 0), font=font)
        for c, thumb in enumerate(thumbs[r]):
            x = origin[0] + c * pitch[0]
            if thumb is None:
                draw.rectangle((x, y, x + cell[0] - 1, y + cell[1] - 1), fill=(225, 225, 225), outline=(200, 200, 200))
                draw.text((x + cell[0] // 2 - 4, y + cell[1] // 2 - 8), "–", fill=(120, 120, 120), font=bold)
            else:
                sheet.paste(thumb, (x, y))
    buffer = _png_bytes(sheet)
    atomic.write_bytes(out, buffer)
    return SheetLayout(sheet.width, sheet.height, len(row_labels), len(column_labels), cell, origin, pitch)


def _png_bytes(image) -> bytes:
    import io

    data = io.BytesIO()
    image.save(data, format="PNG", compress_level=3)
    return data.getvalue()
