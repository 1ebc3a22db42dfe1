"""The slot scheduler's slots (kohya_runner.sweep.scheduler) and the one GPU rule behind its default."""

from __future__ import annotations

import pytest

from kohya_runner import sweep
from kohya_runner.errors import BadInput


def test_slots():
    assert sweep.slots_for(sweep.Options(gpus=[])) == [[]]
    assert sweep.slots_for(sweep.Options(gpus=[], max_parallel=2)) == [[], []]
    assert sweep.slots_for(sweep.Options(gpus=[0, 1, 3])) == [[0], [1], [3]]
    assert sweep.slots_for(sweep.Options(gpus=[0, 1, 3], max_parallel=2)) == [[0], [1]]
    with pytest.raises(BadInput):
        sweep.slots_for(sweep.Options(gpus=[], max_parallel=0))


def test_default_slots_follow_the_one_gpu_rule(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert sweep.slots_for(sweep.Options()) == [[2], [3]]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sweep.slots_for(sweep.Options(max_parallel=2)) == [[], []]
