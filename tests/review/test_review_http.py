"""`kr review` over real HTTP: the token, cross-site actions, path parameters, binding, read-only mode,
and ratings and releases that outlive the server. Each board is a real `kr review` subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from board_server import start_board, wait_for
from conftest import SDXL_KEYS, _header_base, make_standin_checkout, run_kr
from synthetic_run import make_run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A synthetic finished run with sample images (64 px), and a run of the fault stand-in (real LoRA files);
    shared by the module's tests (each one that changes it says so in its assertions)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("review-http")
    home = root / "kr-home"
    shown = make_run(home, subjects=2, epochs=4, every=2, size=64)
    pictures = root / "style"
    pictures.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(pictures / f"img{i}.png")
        (pictures / f"img{i}.txt").write_text(f"in the style of TOK, a shape {i}")
    base = _header_base(root / "sdxl-header.safetensors", SDXL_KEYS)
    checkout = make_standin_checkout(root / "standin-sd-scripts", "fault")
    env = {**os.environ, "KR_FAULT": "ok", "KR_HOME": str(home), "KR_SD_SCRIPTS": str(checkout),
           "KR_SD_PYTHON": sys.executable, "KR_VENDOR_DIR": str(root / "kr-vendor")}
    trained = subprocess.run([sys.executable, "-m", "kohya_runner", "run", "marker", "--dataset", str(pictures),
                              "--base", str(base), "training.epochs=2"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert trained.returncode == 0, trained.stderr
    from kohya_runner.ledger import open_ledger

    sweep = open_ledger(home).create_sweep("lr", home / "sweeps", preset="tiny-demo", members=2)
    for lr in ("1e-4", "3e-4"):
        make_run(home, subjects=1, epochs=2, every=1, size=64, overrides=(f"optimizer.lr={lr}",), sweep_id=sweep.sweep_id)
    return home, shown.run_id, "marker-0002"


@pytest.fixture(scope="module")
def board(workspace):
    home, _, _ = workspace
    server = start_board(home)
    yield server
    assert server.stop() in (0, -2, 130), "\n".join(server.lines)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "ledger.sqlite" not in p.name}


def test_no_token_no_board(board, workspace):
    _, run_id, _ = workspace
    for path in ("/", f"/runs/{run_id}", f"/img/{run_id}/e000002/0", "/api/progress?runs=" + run_id,
                 "/static/review.js", "/no-such-page"):
        answer = board.get(path, cookie=False)
        assert answer.status == 403, (path, answer.status)
        assert b"link kr review printed" in answer.body
    assert board.get("/?token=not-the-token", cookie=False).status == 403
    assert board.get("/", headers={"Cookie": f"kr_review_{board.port}=guess"}, cookie=False).status == 403
    assert board.get("/", headers={"Cookie": f"kr_review_1={board.token}"}, cookie=False).status == 403  # another port's
    posted = board.request("POST", "/api/rate", {"run_id": run_id, "stars": 5, "checkpoint": "tiny-demo.safetensors"},
                           headers={"Content-Type": "application/json"}, cookie=False)
    assert posted.status == 403


def test_the_printed_link_becomes_a_strict_cookie_and_leaves_the_address_bar(board):
    answer = board.get(f"/?token={board.token}", cookie=False)
    assert answer.status == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"kr_review_{board.port}={board.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = board.get("/")
    assert page.status == 200 and b"Runs and sweeps" in page.body
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["referrer-policy"] == "no-referrer"
    # the page itself names nothing outside the board: no http(s) URL of another host, no CDN, no font
    assert b"http://" not in page.body and b"https://" not in page.body


def test_a_forged_cross_site_post_is_refused_and_writes_nothing(board, workspace):
    home, run_id, _ = workspace
    before = _files(home)
    rated = len(json.loads(run_kr("runs", "show", run_id, "--json", env={"KR_HOME": str(home)}).stdout)["ratings"])
    rating = {"run_id": run_id, "stars": 1, "checkpoint": "tiny-demo.safetensors"}
    forged = [
        # a form on another site: no CSRF header, a form body, its own Origin
        ({"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example",
          "Sec-Fetch-Site": "cross-site"}, b"run_id=x&stars=1"),
        # even with the cookie the browser would never send cross-site, and a guessed header: refused
        ({"Content-Type": "application/json", "X-KR-CSRF": "0" * 64, "Origin": board.base}, rating),
        ({"Content-Type": "application/json", "X-KR-CSRF": board.csrf(), "Origin": "http://evil.example"}, rating),
        ({"Content-Type": "application/json", "X-KR-CSRF": board.csrf(), "Sec-Fetch-Site": "cross-site"}, rating),
        ({"Content-Type": "text/plain", "X-KR-CSRF": board.csrf(), "Origin": board.base}, json.dumps(rating).encode()),
    ]
    for headers, body in forged:
        answer = board.request("POST", "/api/rate", body, headers={**headers, "Cookie": f"{board.cookie}; kr_reviewer=Mallory"})
        assert answer.status in (403, 415), (headers, answer.status, answer.body)
    assert _files(home) == before
    assert len(json.loads(run_kr("runs", "show", run_id, "--json", env={"KR_HOME": str(home)}).stdout)["ratings"]) == rated
    # the same rating from the board's own page is taken
    assert board.act("/api/rate", rating, reviewer="Ana").status == 200


def test_a_foreign_host_name_is_refused(board):
    """A page elsewhere that points its own DNS name at 127.0.0.1 still cannot use the board."""
    assert board.get("/", headers={"Host": f"evil.example:{board.port}"}).status == 421
    assert board.get("/", headers={"Host": f"localhost:{board.port}"}).status == 200


@pytest.mark.parametrize("path", [
    "/runs/..%2F..%2Fetc%2Fpasswd", "/runs/%2Fetc%2Fpasswd", "/img/..%2Fsecret/e000002/0", "/img/x/..%2F..%2Fa/0",
    "/compare?pick=../x&pick=y", "/compare?pick=%2Fetc%2Fpasswd&pick=y", "/api/progress?runs=../../etc",
    "/img/r/e000002/0?thumb=/etc/passwd", "/?next=..%5C..%5Cwin", "/static/..%2F..%2Fpyproject.toml",
    "/sweeps/~root", "/runs/a%00b",
])
def test_path_like_parameters_are_refused(board, path):
    answer = board.get(path)
    assert answer.status == 400, (path, answer.status)
    assert b"file path" in answer.body


def test_actions_never_take_a_path(board, workspace):
    home, run_id, released = workspace
    before = _files(home)
    for route, data in [
        ("/api/rate", {"run_id": "../" + run_id, "stars": 3, "checkpoint": "tiny-demo.safetensors"}),
        ("/api/rate", {"run_id": run_id, "stars": 3, "checkpoint": "../../output/tiny-demo.safetensors"}),
        ("/api/rate", {"run_id": run_id, "stars": 3, "sample": "/etc/passwd"}),
        ("/api/rate", {"run_id": run_id, "stars": 9, "checkpoint": "tiny-demo.safetensors"}),
        ("/api/release", {"run_id": released, "checkpoint": "marker.safetensors", "name": "../../escape"}),
        ("/api/release", {"run_id": released, "checkpoint": "/etc/passwd"}),
        ("/api/release", {"run_id": released, "checkpoint": "marker.safetensors", "policy": "../keep"}),
        ("/api/sample", {"run_id": run_id, "checkpoints": ["../e2"], "strengths": "1", "kinds": ["trigger"]}),
        ("/api/reviewer", {"name": "a\x07b"}),
    ]:
        answer = board.act(route, data, reviewer="Ana")
        assert answer.status == 400, (route, data, answer.status, answer.body)
        assert "error" in answer.json()
    assert _files(home) == before


def test_images_come_only_from_the_runs_grid(board, workspace):
    _, run_id, _ = workspace
    image = board.get(f"/img/{run_id}/e000002/0")
    assert image.status == 200 and image.headers["content-type"] == "image/png" and image.body[:4] == b"\x89PNG"
    assert board.get(f"/img/{run_id}/e000002/0?thumb=1").body == image.body  # 64 px: its own thumbnail
    assert board.get(f"/img/{run_id}/e000099/0").status == 400
    assert board.get(f"/img/{run_id}/passwd/0").status == 400
    assert board.get("/img/no-such-run/e000002/0").status == 400


def test_it_listens_on_loopback_only(board):
    listening = [c for c in psutil.Process(board.process.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"]
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for address in others:
        with pytest.raises(OSError):
            socket.create_connection((address, board.port), timeout=2).close()


def test_another_interface_only_with_host_and_a_warning(workspace):
    home, _, _ = workspace
    server = start_board(home, "--host", "0.0.0.0")
    try:
        assert server.get("/").status == 200
        assert any("reachable from other machines" in line for line in server.lines), server.lines
        shown = wait_for(lambda: next((l for l in server.lines if "from other machines: http://" in l), None), 10)
        assert shown.endswith(f":{server.port}/?token={server.token}")
        listening = [c for c in psutil.Process(server.process.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
        assert [c.laddr.ip for c in listening] == ["0.0.0.0"]
    finally:
        server.stop()


def test_a_taken_port_or_a_foreign_address_is_a_clear_error(workspace, board):
    home, _, _ = workspace
    env = {"KR_HOME": str(home)}
    taken = run_kr("review", "--port", str(board.port), env=env, timeout=30)
    assert taken.returncode == 2 and f"port {board.port}" in taken.stderr and "--port 0" in taken.stderr
    assert "Traceback" not in taken.stderr
    foreign = run_kr("review", "--port", "0", "--host", "203.0.113.7", env=env, timeout=30)
    assert foreign.returncode == 2 and "Traceback" not in foreign.stderr and "--host" in foreign.stderr
    nowhere = run_kr("review", env={"KR_HOME": str(home / "missing")}, timeout=30)
    assert nowhere.returncode == 2 and "no kr workspace" in nowhere.stderr


def test_read_only_shows_and_never_changes(workspace):
    home, run_id, released = workspace
    server = start_board(home, "--read-only")
    try:
        page = server.get(f"/runs/{run_id}").text
        assert "read-only" in page and 'class="rate' not in page and "Release this" not in page
        assert "sample-form" not in page
        before = _files(home)
        for route, data in [("/api/rate", {"run_id": run_id, "stars": 5, "checkpoint": "tiny-demo.safetensors"}),
                            ("/api/release", {"run_id": released, "checkpoint": "marker.safetensors"}),
                            ("/api/reviewer", {"name": "Ana"})]:
            answer = server.act(route, data, reviewer="Ana")
            assert answer.status == 403 and "read-only" in answer.json()["error"]
        assert _files(home) == before
    finally:
        server.stop()


def test_ratings_and_releases_outlive_the_board(workspace):
    home, run_id, released = workspace
    env = {"KR_HOME": str(home)}
    board = start_board(home)
    assert board.act("/api/reviewer", {"name": "Ana Lima"}).headers["set-cookie"].startswith("kr_reviewer=Ana%20Lima;")
    for stars, checkpoint, who in ((5, "marker-000001.safetensors", "Ana Lima"), (2, "marker.safetensors", "Ben")):
        answer = board.act("/api/rate", {"run_id": released, "stars": stars, "checkpoint": checkpoint, "note": "ok"},
                           reviewer=who)
        assert answer.status == 200, answer.body
        assert answer.json()["reviewer"] == who
    sample = sorted((Path(home) / "runs" / run_id / "output" / "sample").glob("*.png"))[0].name
    assert board.act("/api/rate", {"run_id": run_id, "stars": 4, "sample": sample}, reviewer="Ana Lima").status == 200
    assert board.stop() in (0, -2, 130)

    again = start_board(home)
    try:
        page = again.get(f"/runs/{released}").text
        assert "5.0★" in page and "Ana Lima" in page and "2.0★" in page
        best = json.loads(run_kr("runs", "best", released, "--by", "rating", "--json", env=env).stdout)
        assert best["chosen"]["file"].endswith("marker-000001.safetensors")
        shown = json.loads(run_kr("runs", "show", run_id, "--json", env=env).stdout)
        assert [(r["sample"], r["stars"], r["reviewer"]) for r in shown["ratings"] if r["sample"]] == [(sample, 4, "Ana Lima")]

        result = again.act("/api/release", {"run_id": released, "checkpoint": "marker-000001.safetensors",
                                            "name": "marker-v1", "policy": "keep"})
        assert result.status == 200, result.body
        delivered = home / "releases"
        assert sorted(p.name for p in delivered.iterdir()) == ["marker-v1.card.json", "marker-v1.card.md",
                                                               "marker-v1.safetensors"]
        card = json.loads((delivered / "marker-v1.card.json").read_text())
        assert card["ratings"] == {"mean": 5.0, "count": 1, "reviewers": ["Ana Lima"]}
        assert "Ana Lima" in (delivered / "marker-v1.card.md").read_text()
        first = (delivered / "marker-v1.safetensors").read_bytes()
        twice = again.act("/api/release", {"run_id": released, "checkpoint": "marker.safetensors", "name": "marker-v1"})
        assert twice.status == 400 and "already exists" in twice.json()["error"]
        assert (delivered / "marker-v1.safetensors").read_bytes() == first
    finally:
        again.stop()


def test_every_page_renders(board, workspace):
    home, run_id, released = workspace
    from kohya_runner.ledger import open_ledger

    sweep = open_ledger(home).sweeps()[0]
    members = [r.run_id for r in open_ledger(home).runs(sweep_id=sweep.sweep_id)]
    overview = board.get("/").text
    assert sweep.sweep_id in overview and run_id in overview and released in overview
    page = board.get(f"/sweeps/{sweep.sweep_id}")
    assert page.status == 200 and all(m in page.text for m in members)
    assert "optimizer.lr = 0.0001" in page.text and "optimizer.lr = 0.0003" in page.text  # what differs
    assert board.get(f"/runs/{released}").status == 200  # a run without samples
    compare = board.get(f"/compare?pick={members[0]}&pick={members[1]}:e000001")
    assert compare.status == 200 and "epoch 1" in compare.text
    one = board.get(f"/compare?pick={members[0]}")
    assert one.status == 404 and "compare needs two picks" in one.text
    missing = board.get("/runs/no-such-run")
    assert missing.status == 404 and "no run" in missing.text
    progress = board.get(f"/api/progress?runs={run_id},{released},nope").json()
    assert sorted(progress["runs"]) == sorted([run_id, released]) and progress["runs"][run_id]["fraction"] == 1.0
