"""The one GPU probe (kohya_runner.gpus): CUDA_VISIBLE_DEVICES first, then NVML, then none (the CPU);
`kr run` takes the first GPU, `kr sweep` all of them."""

from __future__ import annotations

from kohya_runner import gpus


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
