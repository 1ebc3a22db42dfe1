"""Shared caches (kohya_runner.cache): the cache key, the folder of links, completeness, scrubbing what a
killed writer leaves, the lock, and `kr run` reading its images through the folder so nothing is ever
written into the user's dataset folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_standin_checkout, no_process_left, run_kr

from kohya_runner import workspace

from kohya_runner import cache, preset

ONE_EPOCH = ["training.epochs=1", "sampling.at_first=false", "sampling.every_n_epochs=100",
             "saving.every_n_epochs=100", "saving.state=false"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from kohya_runner.tiny import build_tiny_base, write_style_dataset

    root = tmp_path_factory.mktemp("cache-shared")
    return {"sdxl": build_tiny_base(root / "tiny-sdxl", "sdxl"),
            "images": write_style_dataset(root / "images", count=16, size=64)}


@pytest.fixture
def khome(home, shared) -> Path:
    (home / "bases").mkdir(parents=True)
    workspace.tiny_base_dir(home, "sdxl").symlink_to(shared["sdxl"])
    return home


@pytest.fixture
def images(tmp_path, shared) -> Path:
    target = tmp_path / "client-images"
    shutil.copytree(shared["images"], target)
    return target


def spec_for(home: Path, images: Path, *overrides: str):
    return preset.resolve("tiny-demo", home, list(overrides), {"dataset.dir": str(images)}).spec


def listing(folder: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


# ----------------------------------------------------------------------------------------------
# The key and the folder.


def test_key_ignores_training_knobs_and_follows_what_the_cache_depends_on(khome, images):
    base = cache.prepare(khome, spec_for(khome, images))
    for same in (["optimizer.lr=3e-2"], ["optimizer.type=Prodigy", "optimizer.lr=1.0"], ["network.dim=4"],
                 ["network.alpha=2.0"], ["training.seed=7"], ["training.epochs=3"], ["scheduler.name=cosine"],
                 ["dataset.batch_size=1"]):
        assert cache.prepare(khome, spec_for(khome, images, *same)).key == base.key, same
    keys = {base.key}
    for other in (["dataset.resolution=96", "dataset.max_bucket_reso=192"], ["dataset.bucket_reso_steps=64", "dataset.min_bucket_reso=64"],
                  ["dataset.enable_bucket=false"], ["dataset.flip_aug=true"], ["precision.no_half_vae=true", "precision.mixed_precision=bf16"],
                  ["dataset.caption_prefix=hello"], ["sd_scripts.resize_interpolation=lanczos"]):
        keys.add(cache.prepare(khome, spec_for(khome, images, *other)).key)
    assert len(keys) == 8  # every one of those is its own cache
    # captions matter to the text-encoder cache only
    caption = sorted(images.glob("*.txt"))[0]
    caption.write_text("in the style of TOK, a woman thinking\n")
    assert cache.prepare(khome, spec_for(khome, images)).key != base.key
    no_te = ["precision.cache_text_encoder_outputs=false", "precision.cache_text_encoder_outputs_to_disk=false"]
    k1 = cache.prepare(khome, spec_for(khome, images, *no_te)).key
    caption.write_text("in the style of TOK, someone else\n")
    assert cache.prepare(khome, spec_for(khome, images, *no_te)).key == k1
    # image content (not the file's name or time) matters
    image = images / "001_a_cup_of_coffee.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(image)
    assert cache.prepare(khome, spec_for(khome, images, *no_te)).key != k1


def test_folder_is_links_and_a_moved_dataset_keeps_its_cache(khome, images, tmp_path):
    folder = cache.prepare(khome, spec_for(khome, images))
    assert folder.created and folder.path.parent == khome / "caches"
    links = sorted(p for p in folder.path.iterdir() if not p.name.startswith("."))
    assert len(links) == 32 and all(p.is_symlink() for p in links)  # 16 images + 16 captions
    assert all(Path(os.readlink(p)).parent == images.resolve() for p in links)
    assert json.loads((folder.path / cache.KEY_FILE).read_text())["key"] == folder.key
    (folder.path / "000_a_man_thinking_0064x0064_sdxl.npz").write_bytes(b"pretend")
    moved = tmp_path / "moved"
    images.rename(moved)
    again = cache.prepare(khome, spec_for(khome, moved))
    assert again.key == folder.key and not again.created and again.relinked == 32
    assert all(Path(os.readlink(p)).parent == moved.resolve() for p in again.path.iterdir()
               if p.is_symlink())
    assert (again.path / "000_a_man_thinking_0064x0064_sdxl.npz").exists()  # the cache went along


def _npz(path: Path, **arrays) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **{k: np.zeros(2) for k in arrays})


def test_complete_missing_and_scrub(khome, images):
    folder = cache.prepare(khome, spec_for(khome, images))
    assert folder.latent_arrays and folder.te and folder.expected_files() == 32
    assert len(folder.missing()) == 16 and not folder.complete()
    for name in folder.images:
        stem = name[:-4]
        _npz(folder.path / f"{stem}_0064x0064_sdxl.npz", latents=1, original_size=1, crop_ltrb=1)
        _npz(folder.path / f"{stem}_te_outputs.npz", hidden_state1=1, hidden_state2=1, pool2=1)
    assert folder.complete()
    # a writer killed mid-file: sd-scripts' np.savez writes in place (§7.1); the tiny trainer via a temp file
    victim = folder.path / "003_a_busy_street_0064x0064_sdxl.npz"
    if not victim.exists():
        victim = next(folder.path.glob("*_sdxl.npz"))
    victim.write_bytes(victim.read_bytes()[:100])
    (folder.path / "004_x_0064x0064_sdxl.npz.tmp-123.npz").write_bytes(b"half")
    assert not folder.complete() and len(folder.missing()) == 1
    removed = folder.scrub()
    assert sorted(removed) == sorted([victim.name, "004_x_0064x0064_sdxl.npz.tmp-123.npz"])
    assert all(p.is_symlink() for p in folder.path.iterdir() if p.suffix in (".png", ".txt"))
    # a member without flip_aug's extra array is not complete for a flip_aug run
    flipped = cache.for_spec(folder, spec_for(khome, images, "dataset.flip_aug=true"))
    assert "latents_flipped" in flipped.latent_arrays


def test_lock_excludes_writers_and_waits_cancellably(khome, images):
    folder = cache.prepare(khome, spec_for(khome, images))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from kohya_runner.cache import CacheLock
        lock = CacheLock(Path({str(folder.path)!r}))
        assert lock.acquire(exclusive=False)
        print("held", flush=True)
        time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        reader = folder.lock()
        assert reader.try_acquire(exclusive=False)  # readers share
        reader.release()
        writer = folder.lock()
        assert not writer.try_acquire(exclusive=True)  # a writer waits for every reader
        started = time.monotonic()
        calls = []
        assert not writer.acquire(True, cancelled=lambda: time.monotonic() - started > 0.5, on_wait=lambda: calls.append(1))
        assert calls == [1] and 0.5 <= time.monotonic() - started < 3
    finally:
        holder.kill()
        holder.wait()
    writer = folder.lock()
    assert writer.acquire(True)
    writer.downgrade()
    other = folder.lock()
    assert other.try_acquire(exclusive=False)
    other.release()
    writer.release()


# ----------------------------------------------------------------------------------------------
# kr run reads through the folder.


def test_kr_run_never_writes_into_the_dataset_folder_and_reuses_the_cache(khome, images):
    before = listing(images)
    env = {"KR_HOME": str(khome)}
    first = run_kr("run", "tiny-demo", "--dataset", images, "--base", "tiny", *ONE_EPOCH, "--json", env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert listing(images) == before  # not one file added or touched
    row = json.loads(first.stdout)
    doc = (Path(row["run_dir"]) / "dataset.toml").read_text()
    folders = [p for p in (khome / "caches").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == 1 and f'image_dir = "{folders[0]}"' in doc
    npz = {p.name: p.stat().st_ino for p in folders[0].glob("*.npz")}
    assert len(npz) == 32  # 16 latents + 16 text-encoder outputs
    second = run_kr("run", "tiny-demo", "--dataset", images, "--base", "tiny", *ONE_EPOCH, "optimizer.lr=3e-2",
                    "network.dim=4", "--json", env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p.name: p.stat().st_ino for p in folders[0].glob("*.npz")} == npz  # read, not encoded again
    assert len([p for p in (khome / "caches").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 1
    assert listing(images) == before


def test_a_second_writer_waits_for_the_lock(khome, images):
    """Two runs with one key: the one that finds the cache locked by a writer does not start its trainer."""
    env = {"KR_HOME": str(khome)}
    folder = cache.prepare(khome, spec_for(khome, images))
    lock = folder.lock()
    assert lock.acquire(True)  # what a run in its caching phase holds
    try:
        started = run_kr("run", "tiny-demo", "--dataset", images, "--base", "tiny", *ONE_EPOCH, "--detach", "--json",
                         env=env)
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["run_id"]
        time.sleep(3)
        row = json.loads(run_kr("runs", "show", run_id, "--json", env=env).stdout)["run"]
        assert row["status"] == "queued" and row["pid"] is None  # waiting, no trainer yet
        assert "waiting for another run" in (Path(row["run_dir"]) / "supervisor.log").read_text()
    finally:
        lock.release()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        row = json.loads(run_kr("runs", "show", run_id, "--json", env=env).stdout)["run"]
        if row["status"] not in ("queued", "running"):
            break
        time.sleep(1)
    assert row["status"] == "succeeded", row
    assert folder.complete()


def test_stop_while_waiting_for_the_lock_starts_nothing(khome, images):
    env = {"KR_HOME": str(khome)}
    folder = cache.prepare(khome, spec_for(khome, images))
    lock = folder.lock()
    assert lock.acquire(True)
    try:
        started = run_kr("run", "tiny-demo", "--dataset", images, "--base", "tiny", *ONE_EPOCH, "--detach", "--json",
                         env=env)
        run_id = json.loads(started.stdout)["run_id"]
        time.sleep(1.5)
        stopped = run_kr("runs", "stop", run_id, "--json", env=env)
        assert stopped.returncode == 0, stopped.stderr
        row = json.loads(stopped.stdout)
        assert row["status"] == "stopped" and row["pid"] is None and "before the trainer started" in row["hint"]
    finally:
        lock.release()
    assert not no_process_left(row["run_dir"])
    assert not no_process_left(f"supervise {run_id} --home {khome}")


CACHING_STANDIN = '''import os, sys, time, toml
args = {}
for table in toml.load(sys.argv[sys.argv.index("--config_file") + 1]).values():
    args.update(table)
image_dir = toml.load(args["dataset_config"])["datasets"][0]["subsets"][0]["image_dir"]
print("caching latents...", flush=True)
with open(os.path.join(image_dir, "img0_0064x0064_sdxl.npz"), "wb") as f:  # np.savez writes in place
    f.write(b"PK\\x03\\x04 half a zip")
    f.flush()
    time.sleep(600)
'''


def test_a_run_killed_mid_caching_leaves_no_partial_cache_file(khome, tmp_path, monkeypatch, base_file):
    """A stand-in trainer that dies halfway through writing a latent file: kr deletes the truncated file."""
    from PIL import Image

    folder = tmp_path / "style"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (90 * i, 90, 200)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"in the style of TOK, a shape {i}")
    checkout = make_standin_checkout(tmp_path / "standin", "fault")
    (checkout / "sdxl_train_network.py").write_text(CACHING_STANDIN)
    env = {"KR_HOME": str(khome), "KR_SD_SCRIPTS": str(checkout), "KR_SD_PYTHON": sys.executable}
    started = run_kr("run", "marker", "--dataset", folder, "--base", base_file, "--detach", "--json", env=env)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    cache_dir = next(p for p in (khome / "caches").iterdir() if p.is_dir() and not p.name.startswith("."))
    partial = cache_dir / "img0_0064x0064_sdxl.npz"
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert partial.exists()
    stopped = run_kr("runs", "stop", run_id, "--timeout", "2", "--json", env=env)
    assert json.loads(stopped.stdout)["status"] == "stopped"
    deadline = time.monotonic() + 30
    while partial.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not partial.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["img0.png", "img0.txt", "img1.png", "img1.txt"]
    assert not no_process_left(str(checkout))
