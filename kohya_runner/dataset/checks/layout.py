"""Layout: no images, the old N_name layout, subfolders sd-scripts does not read, skipped formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ...sdscripts.images import BASE_IMAGE_EXTENSIONS, PLUGIN_IMAGE_EXTENSIONS, is_sd_image
from ...sdscripts.subset import LEGACY_DIR_RE, DatasetSettings, repeats_is, set_repeats
from .._findings import Finding, finding
from .._scan import DatasetScan, list_dir


def layout_findings(found: DatasetScan, settings: DatasetSettings) -> list[Finding]:
    out: list[Finding] = []
    match = LEGACY_DIR_RE.match(found.dir.name)
    if match:
        out.append(
            finding(
                "legacy-dir-name", None,
                f"the folder is named '{found.dir.name}': with a dataset config the '{match.group(1)}' is not a repeat "
                f"count ({repeats_is(settings)}) and '{match.group(2)}' is not a class token.",
                f"{set_repeats(match.group(1))} if you meant it; renaming the folder is optional.",
            )
        )
    image_dirs = [(d, _count_images(d, found.image_extensions)) for d in found.subdirs]
    image_dirs = [(d, n) for d, n in image_dirs if n]
    if not found.images:
        out.append(_no_images_finding(found, image_dirs))
    elif image_dirs:
        names = ", ".join(f"{d.name}/ ({n})" for d, n in image_dirs[:5])
        out.append(
            finding(
                "subfolders-ignored", image_dirs[0][0].name,
                f"images in subfolders are not read (sd-scripts does not recurse): {names}.",
                "move them into the dataset folder, or train them as a separate dataset.",
            )
        )
    out += _ignored_image_findings(found)
    return out


def _count_images(folder: Path, extensions: Sequence[str]) -> int:
    try:
        files, _ = list_dir(folder)
    except OSError:
        return 0
    return sum(1 for name in files if is_sd_image(name, extensions))


def _no_images_finding(found: DatasetScan, image_dirs: list[tuple[Path, int]]) -> Finding:
    legacy = [(d, n) for d, n in image_dirs if LEGACY_DIR_RE.match(d.name)]
    if legacy:
        folder, count = legacy[0]
        repeats = LEGACY_DIR_RE.match(folder.name).group(1)
        return finding(
            "legacy-parent-dir", folder.name,
            f"{found.dir} holds no images but {len(legacy)} N_name subfolder(s) such as '{folder.name}/' ({count} images): "
            "that is the old --train_data_dir layout. With a dataset config sd-scripts finds nothing, logs "
            "'No data found' and exits 0 without training.",
            f"point the dataset at {folder} and {set_repeats(repeats)} (one dataset per subfolder).",
        )
    if image_dirs:
        folder, count = image_dirs[0]
        return finding(
            "no-images", None,
            f"{found.dir} holds no images itself; '{folder.name}/' has {count}. sd-scripts does not recurse, "
            "logs 'No data found' and exits 0 without training.",
            f"point the dataset at {folder}.",
        )
    ignored = f" ({len(found.ignored_images)} image files in formats it skips)" if found.ignored_images else ""
    return finding(
        "no-images", None,
        f"no image sd-scripts would read in {found.dir}{ignored}; it logs 'No data found' and exits 0.",
        f"add {', '.join(BASE_IMAGE_EXTENSIONS)} images (lower- or upper-case extensions only).",
    )


def _ignored_image_findings(found: DatasetScan) -> list[Finding]:
    out = []
    for path in found.ignored_images:
        ext = os.path.splitext(path.name)[1]
        if ext.lower() in (e.lower() for e in found.image_extensions):
            why = f"its extension '{ext}' is mixed-case; sd-scripts only matches '{ext.lower()}' or '{ext.upper()}'"
            fix = f"rename it to {os.path.splitext(path.name)[0]}{ext.lower()}."
        elif ext.lower() in PLUGIN_IMAGE_EXTENSIONS:
            plugins = " or ".join(PLUGIN_IMAGE_EXTENSIONS[ext.lower()])
            why = f"{ext} is read only when {plugins} is installed in the trainer environment"
            fix = f"convert it to PNG, or install the plugin in the trainer environment and pass extra_image_extensions=('{ext.lower()}',)."
        else:
            why = f"{ext} is not a format sd-scripts reads"
            fix = "convert it to PNG (lossless) or delete it."
        out.append(finding("image-ignored-format", path.name, f"{path.name} is ignored by sd-scripts: {why}.", fix))
    return out
