"""`kr review` in headless Chromium: a running job's progress moving on the board (the fault stand-in, held
at a gate, then let go). The review of real tiny runs (open, zoom, keys, compare, rate, release, sample from
the page) is in test_which_lora.py, on that module's trained and scored runs. The browser never asks for
anything outside 127.0.0.1; screenshots go to $KR_TEST_ARTIFACTS when it is set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from board_server import only_local, shots_folder, start_board, wait_for
from browser import Browser, missing_reason

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")


def test_a_running_jobs_progress_moves_on_the_board(home, tmp_path, style_images, sdxl_header_base, fault_checkout):
    from selenium.webdriver.common.by import By

    gate = tmp_path / "gate"
    env = {**os.environ, "KR_FAULT": "slow", "KR_FAULT_DELAY": "0.25", "KR_FAULT_PAUSE_AFTER_EPOCH": "1",
           "KR_FAULT_GATE": str(gate), "KR_HOME": str(home)}
    trainer = subprocess.Popen([sys.executable, "-m", "kohya_runner", "run", "marker", "--dataset", str(style_images),
                                "--base", str(sdxl_header_base), "training.epochs=4"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    board = None
    try:
        wait_for(gate.exists, 90)  # epoch 1 done, the stand-in holds
        board = start_board(home)
        with Browser() as browser:
            browser.open(board.url)
            bar = browser.driver.find_element(By.CSS_SELECTOR, '[data-progress="marker-0001"] progress')
            assert 0 < float(bar.get_attribute("value")) < 1
            assert browser.driver.find_element(By.CSS_SELECTOR, '[data-status="marker-0001"]').text == "running"
            browser.open(f"{board.base}/runs/marker-0001")
            browser.driver.execute_script("window.krSamePage = true")  # gone if the page reloads
            held = float(browser.driver.find_element(By.CSS_SELECTOR, "[data-progress] progress").get_attribute("value"))
            text = browser.driver.find_element(By.CSS_SELECTOR, ".progress-text").text
            assert held == pytest.approx(0.25) and "step 4/16" in text and "epoch 1/4" in text, text
            browser.screenshot(shots_folder(tmp_path) / "review-progress-held.png")
            gate.unlink()  # training goes on: the page follows without a reload

            def moved():
                value = float(browser.driver.find_element(By.CSS_SELECTOR, "[data-progress] progress").get_attribute("value"))
                return value if value > held and browser.driver.execute_script("return window.krSamePage === true") else None

            later = wait_for(moved, 60, 0.1)
            assert later > held
            assert "step" in browser.driver.find_element(By.CSS_SELECTOR, ".progress-text").text
            # when the run ends, the page reloads itself with the final state
            wait_for(lambda: browser.driver.execute_script("return window.krSamePage !== true && "
                                                        "document.querySelector('[data-status]') !== null && "
                                                        "document.querySelector('[data-status]').textContent === 'succeeded'"),
                  90, 0.3)
            browser.screenshot(shots_folder(tmp_path) / "review-progress-done.png")
            only_local(browser, board)
        assert trainer.wait(60) == 0
    finally:
        gate.unlink(missing_ok=True)
        if trainer.poll() is None:
            trainer.kill()
        if board is not None:
            board.stop()
