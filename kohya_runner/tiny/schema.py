"""A small strict validator for sd-scripts' `--dataset_config`, with voluptuous' error messages.

sd-scripts validates the dataset TOML with voluptuous (library/config_util.py). The tiny trainer
must fail on the same files with the same message shape, e.g.
`extra keys not allowed @ data['datasets'][0]['subsets'][0]['imagedir']`, so this module
re-implements the few voluptuous behaviours that schema uses: exact type checks (`bool` passes
where `int` is expected, `int` fails where `float` is expected), `Required` keys, nested lists of
tables, and errors collected in data order with the first one shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


class Invalid(Exception):
    """One validation error: a message, the path into the data, and voluptuous' `error_type`."""

    def __init__(self, message: str, path: list | None = None, error_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = list(path or [])
        self.error_type = error_type

    def __str__(self) -> str:
        text = self.message
        if self.error_type:
            text += " for " + self.error_type
        if self.path:
            text += " @ data[" + "][".join(repr(p) for p in self.path) + "]"
        return text


class MultipleInvalid(Invalid):
    """All errors of one validation; prints as the first, like voluptuous."""

    def __init__(self, errors: list[Invalid]):
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, first.path, first.error_type)

    def __str__(self) -> str:
        return str(self.errors[0])


# kr recognises a dataset-config failure by the traceback's last line, which sd-scripts prints as
# `voluptuous.error.MultipleInvalid: ...`; naming the module the same keeps that seam identical.
MultipleInvalid.__module__ = "voluptuous.error"
Invalid.__module__ = "voluptuous.error"


# ---------------------------------------------------------------------------------------------
# validators: each is a callable(value, path) -> value that raises Invalid
# ---------------------------------------------------------------------------------------------

Validator = Callable[[Any, list], Any]


def of_type(kind: type) -> Validator:
    def check(value, path):
        if not isinstance(value, kind):
            raise Invalid(f"expected {kind.__name__}", path)
        return value
    return check


def any_of(*validators: Validator) -> Validator:
    """voluptuous.Any: the first validator that passes; else the deepest (first) error."""
    def check(value, path):
        error = None
        for validator in validators:
            try:
                return validator(value, path)
            except Invalid as exc:
                if error is None or len(exc.path) > len(error.path):
                    error = exc
        raise error
    return check


def exact_pair(kind: type) -> Validator:
    """voluptuous.ExactSequence([kind, kind]) -> tuple."""
    def check(value, path):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise Invalid("expected a list", path)
        for item in value:
            of_type(kind)(item, path)
        return tuple(value)
    return check


def scalar_or_pair(kind: type) -> Validator:
    """sd-scripts' resolution check: `kind` (-> (v, v)) or `[kind, kind]` (-> tuple)."""
    def check(value, path):
        if isinstance(value, kind):
            return (value, value)
        try:
            return exact_pair(kind)(value, path)
        except Invalid:
            raise Invalid(f"expected {kind.__name__}", path)
    return check


def any_table(value, path):
    if not isinstance(value, dict):
        raise Invalid("expected a dictionary", path)
    return value


@dataclass(frozen=True)
class Required:
    name: str


def table(schema: dict, error_type: str = "dictionary value") -> Validator:
    """A mapping with exactly these keys (Required(...) keys must be present)."""
    required = [key.name for key in schema if isinstance(key, Required)]
    validators = {(key.name if isinstance(key, Required) else key): check for key, check in schema.items()}

    def check(value, path):
        if not isinstance(value, dict):
            raise Invalid("expected a dictionary", path)
        errors: list[Invalid] = []
        out = {}
        for key, item in value.items():
            key_path = path + [key]
            if key not in validators:
                errors.append(Invalid("extra keys not allowed", key_path))
                continue
            try:
                out[key] = validators[key](item, key_path)
            except MultipleInvalid as exc:
                errors.extend(_typed(e, key_path, error_type) for e in exc.errors)
            except Invalid as exc:
                errors.append(_typed(exc, key_path, error_type))
        for key in required:
            if key not in value:
                errors.append(Invalid("required key not provided", path + [key]))
        if errors:
            raise MultipleInvalid(errors)
        return out
    return check


def _typed(error: Invalid, key_path: list, error_type: str) -> Invalid:
    # voluptuous names the container ("... for dictionary value") only for errors on the value itself
    if len(error.path) <= len(key_path) and error.error_type is None:
        error.error_type = error_type
    return error


def list_of(item_validator: Validator) -> Validator:
    def check(value, path):
        if not isinstance(value, list):
            raise Invalid("expected a list", path)
        errors: list[Invalid] = []
        out = []
        for index, item in enumerate(value):
            try:
                out.append(item_validator(item, path + [index]))
            except MultipleInvalid as exc:
                errors.extend(exc.errors)
            except Invalid as exc:
                errors.append(exc)
        if errors:
            raise MultipleInvalid(errors)
        return out
    return check


def namespace_values(schema: dict) -> Validator:
    """voluptuous Object(schema) with ALLOW_EXTRA: checks the non-None attributes named in schema."""
    def check(namespace, path):
        errors = []
        for key, value in vars(namespace).items():
            if value is None or key not in schema:
                continue
            try:
                schema[key](value, path + [key])
            except Invalid as exc:
                errors.append(_typed(exc, path + [key], "object value"))
        if errors:
            raise MultipleInvalid(errors)
        return namespace
    return check


# ---------------------------------------------------------------------------------------------
# sd-scripts' dataset schema (library/config_util.py ConfigSanitizer, LoRA trainers:
# DreamBooth + fine-tuning + dropout, ControlNet-style only with --masked_loss)
# ---------------------------------------------------------------------------------------------

_INT, _FLOAT, _BOOL, _STR = of_type(int), of_type(float), of_type(bool), of_type(str)
_NUMBER = any_of(_FLOAT, _INT)

SUBSET_ASCENDABLE = {
    "color_aug": _BOOL, "face_crop_aug_range": exact_pair(float), "flip_aug": _BOOL,
    "num_repeats": _INT, "random_crop": _BOOL, "shuffle_caption": _BOOL, "keep_tokens": _INT,
    "keep_tokens_separator": _STR, "secondary_separator": _STR, "caption_separator": _STR,
    "enable_wildcard": _BOOL, "token_warmup_min": _INT, "token_warmup_step": _NUMBER,
    "caption_prefix": _STR, "caption_suffix": _STR, "custom_attributes": any_table,
    "resize_interpolation": _STR,
}
DROPOUT_ASCENDABLE = {
    "caption_dropout_every_n_epochs": _INT, "caption_dropout_rate": _NUMBER,
    "caption_tag_dropout_rate": _NUMBER,
}
DB_SUBSET_ASCENDABLE = {"caption_extension": _STR, "class_tokens": _STR, "cache_info": _BOOL}
DB_SUBSET_DISTINCT = {Required("image_dir"): _STR, "is_reg": _BOOL, "alpha_mask": _BOOL}
FT_SUBSET_DISTINCT = {Required("metadata_file"): _STR, "image_dir": _STR, "alpha_mask": _BOOL}
CN_SUBSET_ASCENDABLE = {"caption_extension": _STR, "cache_info": _BOOL}
CN_SUBSET_DISTINCT = {Required("image_dir"): _STR, Required("conditioning_data_dir"): _STR}
DATASET_ASCENDABLE = {
    "batch_size": _INT, "bucket_no_upscale": _BOOL, "bucket_reso_steps": _INT, "enable_bucket": _BOOL,
    "max_bucket_reso": _INT, "min_bucket_reso": _INT, "resolution": scalar_or_pair(int),
    "network_multiplier": _FLOAT, "validation_split": _FLOAT, "validation_seed": _INT,
    "resize_interpolation": _STR,
}
ARGPARSE_SPECIFIC = {
    "debug_dataset": _BOOL, "max_token_length": _INT, "prior_loss_weight": _NUMBER,
}
ARGPARSE_TO_CONFIG = {"train_batch_size": "batch_size", "dataset_repeats": "num_repeats"}


def _merge(*parts: dict) -> dict:
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return merged


MIXED_STYLES = ("DreamBooth subset and fine tuning subset cannot be mixed in the same dataset. Please split "
                "them into separate datasets. / DreamBoothのサブセットとfine tuninのサブセットを同一のデータセットに"
                "混在させることはできません。別々のデータセットに分割してください。")


def dataset_config_validator(support_controlnet: bool) -> Validator:
    """The validator sd-scripts' LoRA trainers apply to a dataset TOML/JSON."""
    db_subset = _merge(SUBSET_ASCENDABLE, DB_SUBSET_DISTINCT, DB_SUBSET_ASCENDABLE, DROPOUT_ASCENDABLE)
    ft_subset = _merge(SUBSET_ASCENDABLE, FT_SUBSET_DISTINCT, DROPOUT_ASCENDABLE)
    cn_subset = _merge(SUBSET_ASCENDABLE, CN_SUBSET_DISTINCT, CN_SUBSET_ASCENDABLE, DROPOUT_ASCENDABLE)
    db_dataset = table(_merge(DATASET_ASCENDABLE, SUBSET_ASCENDABLE, DB_SUBSET_ASCENDABLE,
                              DROPOUT_ASCENDABLE, {"subsets": list_of(table(db_subset))}))
    ft_dataset = table(_merge(DATASET_ASCENDABLE, SUBSET_ASCENDABLE, DROPOUT_ASCENDABLE,
                              {"subsets": list_of(table(ft_subset))}))
    cn_dataset = table(_merge(DATASET_ASCENDABLE, SUBSET_ASCENDABLE, CN_SUBSET_ASCENDABLE,
                              DROPOUT_ASCENDABLE, {"subsets": list_of(table(cn_subset))}))

    def dataset(value, path):
        subsets = value.get("subsets", []) if isinstance(value, dict) else []
        subsets = subsets if isinstance(subsets, list) else []
        is_dict = [s for s in subsets if isinstance(s, dict)]
        # like sd-scripts, a dataset without subsets counts as fine-tuning style (all() of nothing)
        if support_controlnet and all("conditioning_data_dir" in s for s in is_dict):
            return cn_dataset(value, path)
        if all("metadata_file" in s for s in is_dict):
            return ft_dataset(value, path)
        if all("metadata_file" not in s for s in is_dict):
            return db_dataset(value, path)
        raise Invalid(MIXED_STYLES, path)

    general = table(general_schema(support_controlnet))
    return table({"general": general, "datasets": list_of(dataset)})


def general_schema(support_controlnet: bool) -> dict:
    return _merge(DATASET_ASCENDABLE, SUBSET_ASCENDABLE, DB_SUBSET_ASCENDABLE,
                  CN_SUBSET_ASCENDABLE if support_controlnet else {}, DROPOUT_ASCENDABLE)


def argparse_validator(support_controlnet: bool) -> Validator:
    """Checks the training-argument values that feed the dataset (sd-scripts does this too, so a
    wrongly typed value from --config_file fails here)."""
    general = general_schema(support_controlnet)
    schema = _merge(general, ARGPARSE_SPECIFIC,
                    {name: general[config] for name, config in ARGPARSE_TO_CONFIG.items()})
    return namespace_values(schema)
