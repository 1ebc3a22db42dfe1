"""The memory kr shows is what the trainer's process tree really holds (PSS), not RSS summed over forked
workers that share their parent's pages."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kohya_runner import usage

# A parent that allocates 200 MB, touches every page, then forks 3 children that never write to it.
FORKER = """
import os, sys, time
block = bytearray(200 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def forked_tree():
    process = subprocess.Popen([sys.executable, "-c", FORKER], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        yield process.pid
    finally:
        import os
        import signal

        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_shared_pages_of_forked_children_count_once(forked_tree):
    mib = 2**20
    rss = usage.tree_rss(forked_tree)
    memory = usage.tree_memory(forked_tree)
    assert rss > 4 * 190 * mib  # what the old view showed: every child counted the parent's 200 MB again
    assert 190 * mib < memory < 320 * mib, memory / mib  # once, plus interpreters' private pages


def test_the_fallback_without_pss_also_counts_shared_pages_once(forked_tree, monkeypatch):
    import psutil

    real = psutil.Process.memory_full_info

    def without_pss(self):
        info = real(self)
        fields = {k: v for k, v in info._asdict().items() if k != "pss"}
        return type("Full", (), fields)()

    monkeypatch.setattr(psutil.Process, "memory_full_info", without_pss)
    assert 190 * 2**20 < usage.tree_memory(forked_tree) < 340 * 2**20


def test_a_gone_process_is_zero():
    assert usage.tree_memory(2**22 + 12345) == 0
