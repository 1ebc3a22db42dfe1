"""`kr sweep --ray` for real on one machine: a Ray head and a second node (tests/ray_cluster.py; a custom
resource `kr_slot` stands in for each GPU, token authentication on), a 4-member tiny sweep spread over both,
the second node killed mid-sweep: every member ends succeeded with its run folder in the head's workspace,
and no Ray process is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import no_process_left, run_kr
from tiny_fixtures import tiny_demo_images  # noqa: F401  (session fixture)

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'kohya-runner[ray]')")

from ray_cluster import RESOURCE, Cluster  # noqa: E402

pytestmark = [pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path):
    nodes = {"head": tmp_path / "node-head", "second": tmp_path / "node-second"}
    # the second node sees no shared filesystem: the head sends it the dataset by content hash
    made = Cluster(nodes, {"second": {"KR_RAY_SHARED_FS": "0"}})
    yield made, nodes
    made.stop()
    assert not made.leftovers(), "Ray processes were left behind"


def _four_images(images: Path, tmp_path: Path) -> Path:
    """Four of the demo's pictures with their captions: members train in seconds."""
    import shutil

    folder = tmp_path / "four"
    folder.mkdir()
    for picture in sorted(images.glob("*.png"))[:4]:
        shutil.copy(picture, folder)
        shutil.copy(picture.with_suffix(".txt"), folder)
    return folder


def _training_on(node_home: Path) -> bool:
    """A run on that node is in its training loop."""
    return any("steps:" in log.read_text(errors="replace") for log in node_home.glob("runs/*/trainer.log"))


def test_a_sweep_spreads_over_two_nodes_and_survives_losing_one(cluster, tmp_path, tiny_demo_images):
    made, nodes = cluster
    home = tmp_path / "head-workspace"
    env = {**os.environ, **made.env, "KR_HOME": str(home), "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    sweep = subprocess.Popen([sys.executable, "-m", "kohya_runner", "sweep", "tiny-demo", "--dataset",
                              str(_four_images(tiny_demo_images, tmp_path)), "--base", "tiny", "training.epochs=2",
                              "sampling.at_first=false", 'sampling.prompts=["a red circle"]',
                              "--grid", "optimizer.lr=1e-2,3e-2", "--seeds", "1,2", "--ray", made.address,
                              "--ray-resource", RESOURCE, "--json"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _training_on(nodes["second"]):
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.3)
        made.nodes["second"].kill()  # mid-run
        out, err = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    makespan = time.monotonic() - started
    assert sweep.returncode == 0, out[-3000:] + err[-3000:]
    summary = json.loads(out)
    assert [m["status"] for m in summary["members"]] == ["succeeded"] * 4
    rows = json.loads(run_kr("runs", "ls", "--json", env={"KR_HOME": str(home)}).stdout)["runs"]
    lost = [r for r in rows if r["reason"] == "node_lost"]
    assert len(lost) == 1 and lost[0]["status"] == "crashed" and "queued again" in lost[0]["hint"]
    done = [r for r in rows if r["status"] == "succeeded"]
    assert len(done) == 4 and all(r["sweep_id"] == summary["sweep_id"] for r in rows)
    for row in done:  # the runs came home: LoRA, archive, samples, in the head's workspace and ledger
        folder = Path(row["run_dir"])
        assert folder.parent == home / "runs"
        manifest = json.loads((folder / "archive" / "manifest.json").read_text())
        assert manifest["outcome"]["status"] == "succeeded" and (folder / manifest["result"]).is_file()
        assert json.loads((folder / "run.json").read_text())["run_id"] == row["run_id"]
        shown = json.loads(run_kr("runs", "show", row["run_id"], "--json", env={"KR_HOME": str(home)}).stdout)
        assert shown["posthoc"]["images"] > 0  # the final checkpoint, sampled on the node, recorded here
        assert all(job["job_id"].startswith(row["run_id"] + "/") and job["job_dir"].startswith(str(folder))
                   for job in shown["posthoc"]["jobs"])
    # members trained on both nodes: the second's was lost with it and trained again on the head
    head_node = {r["hint"].rsplit("on Ray node ", 1)[-1].rstrip(")") for r in done}
    assert len(head_node) == 1, head_node
    assert "queued again" in err
    report = run_kr("report", summary["sweep_id"], "--json", env={"KR_HOME": str(home)})
    assert report.returncode == 0, report.stderr
    print(f"ray sweep makespan {makespan:.1f} s")
    assert not no_process_left(str(nodes["second"]))


def test_ctrl_c_stops_the_remote_members(tmp_path, style_images, sdxl_header_base):
    """Members on both nodes train (the fault stand-in, slowly); Ctrl-C on the head stops them all."""
    from conftest import make_standin_checkout

    checkout = make_standin_checkout(tmp_path / "standin-sd-scripts", "fault")
    trainer = {"KR_SD_SCRIPTS": str(checkout), "KR_SD_PYTHON": sys.executable, "KR_FAULT": "slow",
               "KR_FAULT_DELAY": "0.5", "KR_VENDOR_DIR": str(tmp_path / "vendor")}
    nodes = {"head": tmp_path / "node-head", "second": tmp_path / "node-second"}
    made = Cluster(nodes, {name: trainer for name in nodes})
    try:
        home = tmp_path / "head-workspace"
        env = {**os.environ, **made.env, **trainer, "KR_HOME": str(home)}
        sweep = subprocess.Popen([sys.executable, "-m", "kohya_runner", "sweep", "marker", "--dataset", str(style_images),
                                  "--base", str(sdxl_header_base), "training.epochs=100", "--grid",
                                  "optimizer.lr=1e-4,3e-4", "--ray", made.address, "--ray-resource", RESOURCE],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 180
            while not (_training_on(nodes["head"]) and _training_on(nodes["second"])):
                assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
                time.sleep(0.3)
            sweep.send_signal(2)  # SIGINT: Ctrl-C
            out, err = sweep.communicate(timeout=120)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        assert sweep.returncode != 0 and "cancelling 2 Ray task(s)" in err, err[-2000:]  # at once
        rows = json.loads(run_kr("runs", "ls", "--json", env={"KR_HOME": str(home)}).stdout)["runs"]
        assert [r["status"] for r in rows] == ["stopped", "stopped"], rows
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and no_process_left(str(checkout)):
            time.sleep(0.3)
        assert not no_process_left(str(checkout)), "a trainer outlived the stop"
    finally:
        made.stop()
    assert not made.leftovers()


def test_a_bad_ray_address_is_refused_at_once_and_records_nothing(tmp_path, tiny_demo_images):
    home = tmp_path / "head-workspace"
    env = {"KR_HOME": str(home)}
    base = ["sweep", "tiny-demo", "--dataset", str(tiny_demo_images), "--base", "tiny", "--grid", "optimizer.lr=1e-2,3e-2"]
    started = time.monotonic()
    nobody = run_kr(*base, "--ray", "127.0.0.1:1", env=env, timeout=60)
    assert nobody.returncode == 2 and "nothing answers at the Ray address 127.0.0.1:1" in nobody.stderr
    assert time.monotonic() - started < 30 and "Traceback" not in nobody.stderr
    for args, words in ((["--ray", "not an address"], "is not a Ray address"),
                        (["--ray-resource", "kr_slot"], "--ray-resource needs --ray"),
                        (["--ray", "127.0.0.1:1", "--ray-resource", "a b"], "is not a resource name")):
        refused = run_kr(*base, *args, env=env, timeout=60)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
    assert not (home / "sweeps").exists() and not (home / "runs").exists()
