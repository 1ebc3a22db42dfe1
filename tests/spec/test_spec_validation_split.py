"""dataset.validation_split / dataset.validation_seed: the fields, their range and description, the sd-scripts
names, and how they reach dataset.toml (floats as floats, the seed always written with a split)."""

from __future__ import annotations

from pathlib import Path

import pytest
import toml

from kohya_runner import render
from kohya_runner.runfolder import DATASET_FILE
from kohya_runner.sdscripts.dataset_config import check_dataset_config, dataset_config
from kohya_runner.spec import SpecError, build_spec, describe, parse_override


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        build_spec(data)
    return [p.render() for p in info.value.problems]


def rendered_dataset(spec) -> dict:
    """dataset.toml as sd-scripts' toml reader sees it (render_texts also checks read-back and the schema)."""
    _, texts = render.render_texts(spec, render.placeholder_paths(spec, Path("/nonexistent/kr-home")))
    return toml.loads(texts[DATASET_FILE])


def test_fields_default_off_and_are_described():
    d = build_spec({}).dataset
    assert d.validation_split == 0.0 and type(d.validation_split) is float and d.validation_seed is None
    split, seed = describe(("dataset", "validation_split")), describe(("dataset", "validation_seed"))
    assert "(validation_split)" in split and "validation loss" in split and "held-out" in split
    assert "(validation_seed)" in seed and "training.seed" in seed


def test_range():
    assert build_spec({"dataset": {"validation_split": 0.25}}).dataset.validation_split == 0.25
    assert build_spec({"dataset": {"validation_split": 0}}).dataset.validation_split == 0.0
    [message] = problems({"dataset": {"validation_split": 1.0}})
    assert message.startswith("dataset.validation_split = 1.0") and "less than 1" in message
    [message] = problems({"dataset": {"validation_split": -0.1}})
    assert message.startswith("dataset.validation_split = -0.1")
    [message] = problems({"dataset": {"validation_seed": -1}})
    assert message.startswith("dataset.validation_seed = -1")


def test_overrides_and_sd_scripts_names():
    assert parse_override("dataset.validation_split=0.2").value == 0.2
    assert parse_override("dataset.validation_seed=7").value == 7
    typed = parse_override("validation_split=0.1")  # sd-scripts' name, as guides write it
    assert typed.path == ("dataset", "validation_split") and "kr calls it dataset.validation_split" in typed.note


def test_raw_sd_scripts_option_is_refused_for_the_spec_field():
    spec = build_spec({"model": {"base": "/x/base.safetensors"}, "sd_scripts": {"validation_split": 0.2}})
    with pytest.raises(SpecError) as info:
        render.check_spec(spec, Path("/nonexistent/kr-home"))
    [message] = [p.render() for p in info.value.problems]
    assert message.startswith("sd_scripts.validation_split = 0.2") and "set dataset.validation_split instead" in message


def test_not_rendered_without_a_split():
    for data in ({}, {"dataset": {"validation_seed": 5}}):
        [ds] = rendered_dataset(build_spec(data))["datasets"]
        assert "validation_split" not in ds and "validation_seed" not in ds


def test_rendered_as_float_with_the_seed():
    [ds] = rendered_dataset(build_spec({"dataset": {"validation_split": 0.25}, "training": {"seed": 1234}}))["datasets"]
    assert type(ds["validation_split"]) is float and ds["validation_split"] == 0.25
    assert ds["validation_seed"] == 1234  # training.seed: sd-scripts would otherwise shuffle the two copies apart
    [ds] = rendered_dataset(build_spec({"dataset": {"validation_split": 0.5, "validation_seed": 9}}))["datasets"]
    assert type(ds["validation_split"]) is float and ds["validation_split"] == 0.5 and ds["validation_seed"] == 9
    assert "subsets" in ds and "validation_split" not in ds["subsets"][0]  # a dataset-level key


def test_the_schema_wants_a_float_and_an_int():
    spec = build_spec({"dataset": {"validation_split": 0.1}})
    doc = dataset_config(spec, render.placeholder_paths(spec, Path("/nonexistent/kr-home")))
    assert check_dataset_config(doc) == []
    doc["datasets"][0]["validation_split"] = 1  # what an untyped writer would produce for 1.0
    doc["datasets"][0]["validation_seed"] = 3.0
    assert check_dataset_config(doc) == ["expected float for dictionary value @ data['datasets'][0]['validation_split']",
                                         "expected int for dictionary value @ data['datasets'][0]['validation_seed']"]
