"""Defining a sweep (kohya_runner.sweep.grid): grid values, paired sets, seeds, sweep TOML files."""

from __future__ import annotations

import pytest

from kohya_runner import sweep
from kohya_runner.errors import BadInput


def test_split_values_keeps_brackets_braces_and_quotes_together():
    assert sweep.split_values("1e-4,3e-4") == ["1e-4", "3e-4"]
    assert sweep.split_values('[1,2],{a = 1, b = 2},"x,y",64x96') == ["[1,2]", "{a = 1, b = 2}", '"x,y"', "64x96"]


def test_grid_values_are_typed_like_overrides():
    axis = sweep.grid_axis("optimizer.lr=1e-4,3e-4")
    assert axis.choices == [[("optimizer.lr", 1e-4)], [("optimizer.lr", 3e-4)]]
    assert sweep.grid_axis("optimizer.type=AdamW8bit,Prodigy").choices[1] == [("optimizer.type", "Prodigy")]
    assert sweep.grid_axis("training.steps=none,100").choices[0] == [("training.steps", None)]
    with pytest.raises(BadInput, match="did you mean 'optimizer.lr'"):
        sweep.grid_axis("optimizer.lrr=1,2")
    with pytest.raises(BadInput, match="key.path=value1,value2"):
        sweep.grid_axis("optimizer.lr")


SWEEP_TOML = """
[sweep]
name = "optimizers"
preset = "tiny-demo"
seeds = [1, 2]

[set]
training.epochs = 2

[grid]
network.dim = [4, 8]
"dataset.resolution" = [[64, 64], [96, 96]]

[[paired]]
optimizer.type = "AdamW"
optimizer.lr = [1e-4, 2e-4, 3e-4, 5e-4]

[[paired]]
optimizer.type = "Prodigy"
optimizer.lr = 1.0
optimizer.args = { d_coef = 1.0, weight_decay = 0.01, safeguard_warmup = true }

[[paired]]
optimizer.type = "Adafactor"
optimizer.lr = [1e-4, 2e-4]
optimizer.args = { relative_step = false, scale_parameter = false, warmup_init = false }
"""


def test_sweep_file_grid_paired_ladders_and_seeds(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP_TOML)
    definition = sweep.load_file(path)
    assert definition.preset == "tiny-demo" and definition.name == "optimizers"
    assert definition.fixed == [("training.epochs", 2)]
    assert [a.name for a in definition.axes] == ["network.dim", "dataset.resolution", "paired", "seed"]
    paired = definition.axes[2]
    assert len(paired.choices) == 4 + 1 + 2  # a ladder inside an alternative expands it
    prodigy = paired.choices[4]
    assert dict(prodigy) == {"optimizer.type": "Prodigy", "optimizer.lr": 1.0,
                             "optimizer.args": {"d_coef": 1.0, "weight_decay": 0.01, "safeguard_warmup": True}}
    assert definition.axes[1].choices == [[("dataset.resolution", [64, 64])], [("dataset.resolution", [96, 96])]]
    members = sweep.expand(definition)
    assert len(members) == 2 * 2 * 7 * 2
    assert members[0] == [("network.dim", 4), ("dataset.resolution", [64, 64]), ("optimizer.type", "AdamW"),
                          ("optimizer.lr", 1e-4), ("training.seed", 1)]


def test_named_paired_sets_are_independent_axes(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('[[paired.opt]]\noptimizer.type = "AdamW"\n[[paired.opt]]\noptimizer.type = "Lion"\n'
                    '[[paired.sched]]\nscheduler.name = "cosine"\n[[paired.sched]]\nscheduler.name = "linear"\n'
                    'scheduler.warmup_steps = 4\n')
    definition = sweep.load_file(path)
    assert [a.name for a in definition.axes] == ["paired.opt", "paired.sched"]
    assert len(sweep.expand(definition)) == 4


@pytest.mark.parametrize("text, message", [
    ("[grid]\noptimizer.lr = [1e-4]\n[[paired]]\noptimizer.lr = 2e-4\n", "set both by"),
    ("[set]\noptimizer.lr = [1e-4, 2e-4]\n", "move it to \\[grid\\]"),
    ("[grid]\noptimizer.lrr = [1e-4]\n", "did you mean 'optimizer.lr'"),
    ("[sweeps]\nname = 'x'\n", "unknown table"),
    ("[sweep]\nseeds = 3\n", "seeds must be a list"),
    ("[sweep]\nname = 'x'\n", "varies nothing"),
    ("[grid\n", "not valid TOML"),
])
def test_bad_sweep_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        sweep.expand(sweep.load_file(path))
