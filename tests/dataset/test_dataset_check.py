"""dataset.check(): a clean dataset, the report's shape, the import cost, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("numpy")
pytest.importorskip("PIL.Image")

from dataset_helpers import make_dataset, settings  # noqa: E402
from kohya_runner.dataset import FINDING_CODES, TrainingPlan, check  # noqa: E402
from kohya_runner.errors import BadInput, Failed  # noqa: E402


def test_clean_dataset_has_no_findings(tmp_path):
    root = make_dataset(tmp_path / "style")
    report = check(settings(root))
    assert report.findings == []
    assert report.ok and report.images == 3 and report.captions == 3


def test_report_json_shape_is_stable(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img0.txt").write_text("")
    data = json.loads(check(settings(root), TrainingPlan(max_train_epochs=2, family="sd15")).to_json())
    assert list(data) == ["schema", "dir", "ok", "counts", "errors", "warnings", "tokens", "buckets", "steps"]
    assert data["schema"] == "kr.dataset-check/1" and data["ok"] is False
    assert list(data["errors"][0]) == ["code", "severity", "file", "message", "fix"]
    assert data["errors"][0]["code"] == "caption-empty"
    assert set(data["counts"]) == {"images", "captions", "errors", "warnings"}
    assert data["steps"]["total_steps"] == 6 and data["buckets"]["items"] == 3


def test_every_finding_code_has_a_severity():
    assert all(sev in ("error", "warning") for sev, _ in FINDING_CODES.values())


def test_import_is_cheap_and_lazy():
    code = "import sys, kohya_runner.dataset; print(sorted(m for m in ('PIL', 'numpy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_folder_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        check(settings(tmp_path / "nope"))


def test_raise_for_errors_is_failed(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img1.txt").write_bytes(b"")
    with pytest.raises(Failed, match="img1.txt"):
        check(settings(root)).raise_for_errors()
