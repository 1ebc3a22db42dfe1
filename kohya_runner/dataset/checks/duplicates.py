"""Duplicates: byte-identical images, and near-copies by perceptual hash and mean colour."""

from __future__ import annotations

from typing import Sequence

from .._findings import Finding, finding
from .._probe import ImageProbe
from .._scan import DatasetScan

NEAR_DUP_MAX_BITS = 5  # dHash hamming distance (of 64) still counted as "the same picture"
NEAR_DUP_MAX_COLOR = 16.0  # ... and mean colours within this (0-255) so flat images of different colour differ


def duplicate_findings(found: DatasetScan, probes: list[ImageProbe]) -> list[Finding]:
    out: list[Finding] = []
    first_by_hash: dict[str, str] = {}
    exact_pairs: set[tuple[int, int]] = set()
    index_by_name = {img.rel: i for i, img in enumerate(found.images)}
    for i, (img, probe) in enumerate(zip(found.images, probes)):
        if not probe.sha256:
            continue
        original = first_by_hash.setdefault(probe.sha256, img.rel)
        if original != img.rel:
            exact_pairs.add((index_by_name[original], i))
            out.append(
                finding(
                    "image-duplicate", img.rel,
                    f"{img.rel} is byte-identical to {original}: it trains twice as often as the others.",
                    f"delete {img.rel} (and its caption) unless the extra weight is intended.",
                )
            )
    out += _near_duplicate_findings(found, probes, exact_pairs)
    return out


def near_duplicate_pairs(probes: Sequence[ImageProbe]) -> list[tuple[int, int, int]]:
    """(i, j, hamming bits) for pairs with close dHashes and close mean colours."""
    import numpy as np

    usable = [i for i, p in enumerate(probes) if p.dhash is not None]
    if len(usable) < 2:
        return []
    hashes = np.array([probes[i].dhash for i in usable], dtype=np.uint64)
    means = np.array([probes[i].mean_rgb for i in usable], dtype=np.float64)
    pairs = []
    for a in range(len(usable) - 1):
        xor = np.bitwise_xor(hashes[a], hashes[a + 1 :])
        bits = np.bitwise_count(xor) if hasattr(np, "bitwise_count") else np.unpackbits(xor.view(np.uint8)).reshape(-1, 64).sum(1)
        colour = np.abs(means[a + 1 :] - means[a]).max(axis=1)
        for offset in np.nonzero((bits <= NEAR_DUP_MAX_BITS) & (colour <= NEAR_DUP_MAX_COLOR))[0]:
            pairs.append((usable[a], usable[a + 1 + int(offset)], int(bits[offset])))
    return pairs


def _near_duplicate_findings(found: DatasetScan, probes: list[ImageProbe], exact: set[tuple[int, int]]) -> list[Finding]:
    out = []
    reported: set[int] = set()
    for i, j, bits in near_duplicate_pairs(probes):
        if (i, j) in exact or j in reported or probes[i].sha256 == probes[j].sha256:
            continue
        reported.add(j)
        first, second = found.images[i].rel, found.images[j].rel
        out.append(
            finding(
                "image-near-duplicate", second,
                f"{second} looks almost identical to {first} (perceptual hash {bits}/64 bits apart): "
                "near-copies overweight one picture and teach less style.",
                f"keep the better of {first} and {second}, or make sure the difference is intended.",
            )
        )
    return out
