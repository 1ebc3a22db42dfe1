"""The dataset TOML (--dataset_config, §2.3): rendering one subset from a spec, and checking a document
as strictly as sd-scripts' voluptuous schema does."""

from __future__ import annotations

from typing import Any

_DATASET_LEVEL = {
    "resolution": "resolution", "batch_size": int, "enable_bucket": bool, "min_bucket_reso": int,
    "max_bucket_reso": int, "bucket_reso_steps": int, "bucket_no_upscale": bool, "network_multiplier": float,
    "validation_split": float, "validation_seed": int, "resize_interpolation": str,
}
_SUBSET_COMMON = {
    "num_repeats": int, "shuffle_caption": bool, "caption_separator": str, "keep_tokens": int,
    "keep_tokens_separator": str, "secondary_separator": str, "enable_wildcard": bool, "caption_prefix": str,
    "caption_suffix": str, "color_aug": bool, "flip_aug": bool, "random_crop": bool, "face_crop_aug_range": list,
    "token_warmup_min": int, "token_warmup_step": "number", "custom_attributes": dict, "resize_interpolation": str,
    "caption_dropout_rate": "number", "caption_dropout_every_n_epochs": int, "caption_tag_dropout_rate": "number",
    "caption_extension": str, "class_tokens": str, "cache_info": bool,
}
_SUBSET_ONLY = {"image_dir": str, "is_reg": bool, "alpha_mask": bool}
DATASET_SCHEMA = {
    "general": {**_DATASET_LEVEL, **_SUBSET_COMMON},
    "datasets": {**_DATASET_LEVEL, **_SUBSET_COMMON},
    "subsets": {**_SUBSET_COMMON, **_SUBSET_ONLY},
}


def dataset_config(spec, paths) -> dict[str, Any]:
    """The dataset TOML document for `spec`, its subset reading `paths.image_dir` (a RenderPaths)."""
    d = spec.dataset
    general: dict[str, Any] = {
        # .caption is sd-scripts' default (§0); kr always says which extension it means.
        "caption_extension": d.caption_extension,
        "shuffle_caption": d.shuffle_caption,
        "keep_tokens": d.keep_tokens,
    }
    if d.keep_tokens_separator:
        general["keep_tokens_separator"] = d.keep_tokens_separator
    width, height = d.resolution
    dataset: dict[str, Any] = {
        "resolution": width if width == height else [width, height],
        "batch_size": d.batch_size,
        "enable_bucket": d.enable_bucket,
        "min_bucket_reso": d.min_bucket_reso,
        "max_bucket_reso": d.max_bucket_reso,
        "bucket_reso_steps": d.bucket_reso_steps,
        "bucket_no_upscale": d.bucket_no_upscale,
    }
    if d.validation_split > 0:
        # A float, always (the schema rejects 0 or 1 as ints). The seed is always written: without one sd-scripts
        # shuffles the training and the validation copy of the dataset with different global random states, so
        # the two parts would overlap (kohya_runner.sdscripts.validation).
        dataset["validation_split"] = float(d.validation_split)
        dataset["validation_seed"] = d.validation_seed if d.validation_seed is not None else spec.training.seed
    subset: dict[str, Any] = {"image_dir": str(paths.image_dir), "num_repeats": d.repeats}
    for key in ("caption_prefix", "caption_suffix"):
        if getattr(d, key):
            subset[key] = getattr(d, key)
    for key in ("flip_aug", "color_aug", "random_crop"):
        subset[key] = getattr(d, key)
    for key in ("caption_dropout_rate", "caption_tag_dropout_rate"):
        if getattr(d, key):
            subset[key] = float(getattr(d, key))
    dataset["subsets"] = [subset]
    return {"general": general, "datasets": [dataset]}


def check_dataset_config(doc: dict[str, Any]) -> list[str]:
    """Problems sd-scripts' strict dataset schema would raise at start-up, in its path notation."""
    problems = []
    extra = set(doc) - {"general", "datasets"}
    problems += [f"extra keys not allowed @ data['{k}']" for k in sorted(extra)]
    problems += _check_table(doc.get("general", {}), "general", "data['general']")
    datasets = doc.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        return problems + ["required key not provided @ data['datasets']"]
    for i, dataset in enumerate(datasets):
        where = f"data['datasets'][{i}]"
        subsets = dataset.get("subsets")
        problems += _check_table({k: v for k, v in dataset.items() if k != "subsets"}, "datasets", where)
        if not isinstance(subsets, list) or not subsets:
            problems.append(f"required key not provided @ {where}['subsets']")
            continue
        for j, subset in enumerate(subsets):
            sub_where = f"{where}['subsets'][{j}]"
            problems += _check_table(subset, "subsets", sub_where)
            if "image_dir" not in subset:
                problems.append(f"required key not provided @ {sub_where}['image_dir']")
    return problems


def _check_table(table: dict[str, Any], level: str, where: str) -> list[str]:
    schema, problems = DATASET_SCHEMA[level], []
    for key, value in table.items():
        expected = schema.get(key)
        if expected is None:
            problems.append(f"extra keys not allowed @ {where}['{key}']")
        elif not _dataset_type_ok(expected, value):
            name = expected if isinstance(expected, str) else expected.__name__
            problems.append(f"expected {name} for dictionary value @ {where}['{key}']")
    return problems


def _dataset_type_ok(expected: Any, value: Any) -> bool:
    if expected == "resolution":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value))
    if expected == "number":
        return type(value) in (int, float)
    return type(value) is expected  # voluptuous is exact here: 0 is not a float, True is not an int
