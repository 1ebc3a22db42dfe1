"""Page loads of `kr review` on a 10-run workspace with 500 sample images, in headless Chromium, beside the
alternative for looking at a run: `kr report RUN` (write the static sheet) and opening its page.

The workspace is built without training (tests/synthetic_run.py): 10 finished runs, each 5 subjects × 2
prompt forms × (base + 4 epochs) = 50 samples at the given size. A load is the browser's own measure,
navigation start → load event end (the document, its stylesheet and script, and every image the page
shows); each page is loaded cold (first visit after the board started: thumbnails made) and warm.

    python bench/bench_review.py                  # 512 px samples, 5 warm loads per page
    python bench/bench_review.py --size 1024 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGET_MS = 300
RUNS, SUBJECTS, EPOCHS = 10, 5, 4


def load_ms(browser, url: str) -> float:
    browser.open(url)
    return browser.driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="sample image side in pixels (default 512)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from board_server import start_board
    from browser import Browser
    from synthetic_run import make_run

    from kohya_runner import runfolder
    from kohya_runner.report import run_report

    with tempfile.TemporaryDirectory(prefix="kr-bench-review-") as tmp:
        home = Path(tmp) / "home"
        rows = [make_run(home, subjects=SUBJECTS, epochs=EPOCHS, every=1, size=args.size,
                         overrides=(f"optimizer.lr={(i + 1) * 1e-4:g}",)) for i in range(RUNS)]
        images = sum(len(list(runfolder.of(r.run_dir).samples.glob("*.png"))) for r in rows)
        print(f"workspace: {len(rows)} runs, {images} samples of {args.size}×{args.size}")
        run_id, other = rows[0].run_id, rows[1].run_id
        pages = {"board": "/", "run (50 images)": f"/runs/{run_id}",
                 "compare 2 runs": f"/compare?pick={run_id}&pick={other}"}
        figures: dict = {"size": args.size, "runs": len(rows), "images": images, "target_ms": TARGET_MS, "pages": {}}
        board = start_board(home)
        try:
            with Browser() as browser:
                browser.open(board.url)  # the token for a cookie
                for name, path in pages.items():
                    cold = load_ms(browser, board.base + path)
                    warm = [load_ms(browser, board.base + path) for _ in range(args.repeat)]
                    shown = len(browser.images())
                    figures["pages"][name] = {"cold_ms": round(cold, 1), "warm_ms": round(statistics.median(warm), 1),
                                              "images": shown}
                    print(f"  kr review {name:<18} cold {cold:6.1f} ms   warm {statistics.median(warm):6.1f} ms "
                          f"(median of {args.repeat})   {shown} images")
                # the alternative: write the static sheet, then open it
                start = time.perf_counter()
                result = run_report(home, run_id)
                written = (time.perf_counter() - start) * 1000
                opened = load_ms(browser, Path(result["html"]).as_uri())
                figures["report"] = {"write_ms": round(written, 1), "open_ms": round(opened, 1)}
                print(f"  kr report RUN + open     write {written:6.1f} ms + open {opened:6.1f} ms "
                      f"= {written + opened:6.1f} ms")
        finally:
            board.stop()
    worst = max(p["warm_ms"] for p in figures["pages"].values())
    print(f"slowest warm page load {worst:.1f} ms (target < {TARGET_MS} ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
