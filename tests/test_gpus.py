"""The one GPU probe (kohya_runner.gpus): CUDA_VISIBLE_DEVICES first, then NVML, then none (the CPU);
`kr run` takes the first GPU, `kr sweep` all of them; a GPU asked for by number must be there."""

from __future__ import annotations

import pytest

from kohya_runner import gpus
from kohya_runner.errors import BadInput


def test_cuda_visible_devices_is_the_list(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert gpus.visible() == [3, 1]
    assert gpus.default_for_run() == [3] and gpus.default_for_sweep() == [3, 1]


def test_an_empty_or_unnumbered_list_means_the_cpu(monkeypatch):
    for value in ("", "GPU-8c3f0a1e-uuid"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert gpus.visible() == [] and gpus.default_for_run() is None and gpus.default_for_sweep() == []


def test_without_the_variable_nvml_decides(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    found = gpus.visible()  # this machine: whatever NVML sees ([] without an NVIDIA driver)
    assert found == list(range(len(found)))
    assert gpus.default_for_run() == (found[:1] or None)


def test_kr_run_and_kr_sweep_choose_by_the_same_rule(monkeypatch):
    from kohya_runner import sweep
    from kohya_runner.cli.run import gpu_option

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert gpu_option(None) == [2] and sweep.slots_for(sweep.Options()) == [[2], [5]]
    assert gpu_option("cpu") == [] and gpu_option("5,2") == [5, 2]  # GPUs outside the list: tests/run/test_run_faults.py


def test_a_gpu_that_is_not_there_is_refused_naming_it_and_the_fix(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    gpus.check_requested([])  # the CPU
    gpus.check_requested([1, 0])
    with pytest.raises(BadInput) as refused:
        gpus.check_requested([0, 7])
    message = str(refused.value)
    assert "GPU 7" in message and "2 GPUs are visible (0, 1" in message and "--gpu cpu" in message
    assert "--gpu 0 (any of 0, 1)" in message
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(BadInput, match=r"--gpus asks for GPU 2, .*1 GPU is visible \(0; CUDA_VISIBLE_DEVICES='0'\)"):
        gpus.check_requested([2], option="--gpus")
    with pytest.raises(BadInput, match="lists GPU 0 more than once. Fix: name each GPU once, e.g. --gpu 0"):
        gpus.check_requested([0, 0])


def test_asking_for_any_gpu_where_there_is_none_is_refused(monkeypatch):
    # An empty CUDA_VISIBLE_DEVICES hides every GPU, as a machine without an NVIDIA driver has none.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BadInput, match=r"asks for GPU 0, but no GPU is visible on this machine .*Fix: --gpu cpu"):
        gpus.check_requested([0])
    gpus.check_requested([])


def test_without_a_driver_the_message_says_so(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpus, "nvml", lambda: None)
    with pytest.raises(BadInput, match=r"no GPU is visible on this machine \(no NVIDIA driver answers\)"):
        gpus.check_requested([7])


def test_driver_present_is_a_plain_answer():
    assert isinstance(gpus.driver_present(), bool)
