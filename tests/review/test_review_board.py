"""kohya_runner.review's library: what each page shows (Board), and the gate (Guard) on hand-made requests.
Real ledgers and run folders (synthetic finished runs); the server itself is tested in test_review_http."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kohya_runner.errors import BadInput
from kohya_runner.review import Board, Pick
from kohya_runner.review._board import loss_curve, progress_of
from kohya_runner.review._guard import Guard, looks_like_path
from synthetic_run import make_run


@pytest.fixture
def two_runs(home):
    first = make_run(home, subjects=2, epochs=4, every=2, size=64)
    second = make_run(home, subjects=2, epochs=4, every=2, size=512, overrides=("optimizer.lr=3e-4",))
    return Board(home, home / "releases"), first.run_id, second.run_id


def test_the_overview_lists_runs_newest_first_with_progress(two_runs):
    board, first, second = two_runs
    view = board.overview()
    assert [r["run_id"] for r in view["runs"]] == [second, first]
    assert view["runs"][0]["fraction"] == 1.0 and view["runs"][0]["status"] == "succeeded"
    assert view["runs"][0]["score"] is None and view["runs"][0]["rating"] is None


def test_a_run_page_holds_the_grid_checkpoints_and_curve(two_runs):
    board, first, _ = two_runs
    view = board.run(first)
    assert [c["label"] for c in view["columns"]] == ["base model", "epoch 2", "epoch 4 (final)"]
    assert [c["file"] for c in view["checkpoints"]] == ["tiny-demo-000002.safetensors", "tiny-demo.safetensors"]
    assert [c["pick"] for c in view["checkpoints"]] == ["e2", "final"]
    cell = view["groups"][0]["rows"][0]["cells"][0]
    assert cell["url"] == f"/img/{first}/e000000/0" and cell["thumb"].endswith("?thumb=1")
    assert (view["cell_w"], view["cell_h"]) == (192, 192)  # 64 px samples shown three times larger
    assert view["curve"]["lines"][0]["d"].startswith("M0.0,")


def test_images_are_found_through_the_grid_and_large_ones_get_thumbnails(two_runs):
    board, first, second = two_runs
    path, media = board.image(first, "e000002", 0)
    assert isinstance(path, Path) and path.is_file() and media == "image/png"
    assert board.image(first, "e000002", 0, thumb=True)[0] == path  # small: the file itself
    made, media = board.image(second, "e000002", 0, thumb=True)
    cached, _ = board.image(second, "e000002", 0, thumb=True)  # the second time: the workspace's cached file
    assert media == "image/jpeg" and isinstance(made, bytes) and made[:2] == b"\xff\xd8"
    assert isinstance(cached, Path) and cached.read_bytes() == made and "review-thumbnails" in str(cached)
    from PIL import Image

    assert max(Image.open(cached).size) == 320
    for run_id, key, index in ((first, "e000099", 0), (first, "../x", 0), ("no-such-run", "e000002", 0),
                               ("../etc", "e000002", 0)):
        with pytest.raises(BadInput):
            board.image(run_id, key, index)


def test_a_lineup_puts_two_checkpoints_beside_the_base_at_the_same_seeds(two_runs):
    board, first, second = two_runs
    view = board.lineup([Pick.parse(f"{first}:e000002"), Pick.parse(first)])
    assert [h["label"] for h in view["heads"]] == ["base model", f"{first} · epoch 2", f"{first} · epoch 4 (final)"]
    line = view["lines"][0]
    assert [c["url"].split("/")[3] for c in line["cells"]] == ["e000000", "e000002", "e000004"]
    runs = board.lineup([Pick.parse(first), Pick.parse(second)])
    assert runs["heads"][1]["settings"] == ["optimizer.lr = 0.01", "sampling.height = 64", "sampling.width = 64"]
    assert runs["heads"][2]["settings"] == ["optimizer.lr = 0.0003", "sampling.height = 512", "sampling.width = 512"]


@pytest.mark.parametrize("text", ["../x", "/etc/passwd", "run:../e2", "run:e1", "", "a b"])
def test_picks_are_run_ids_and_grid_columns_only(text):
    with pytest.raises(BadInput):
        Pick.parse(text)


def test_actions_are_refused_on_a_read_only_board(two_runs, home):
    _, first, _ = two_runs
    board = Board(home, home / "releases", read_only=True)
    with pytest.raises(BadInput, match="read-only"):
        board.rate(first, "Ana", 5, checkpoint="tiny-demo.safetensors")
    with pytest.raises(BadInput, match="read-only"):
        board.release(first, "tiny-demo.safetensors")
    with pytest.raises(BadInput, match="read-only"):
        board.sample(first, ["final"], "1.0", ["trigger"])


def test_progress_and_curve_helpers():
    class Row:
        run_id, status, reason, hint, active = "r", "running", None, None, True
        steps_done, steps_total, epoch, epochs_total, loss, it_per_s, duration = 30, 120, 1, 4, 0.2, 3.0, 10.0

    shown = progress_of(Row)
    assert shown["fraction"] == 0.25 and shown["eta_seconds"] == 30
    assert loss_curve({}) is None
    from kohya_runner.metrics import Point

    curve = loss_curve({"loss/average": [Point("loss/average", s, 1.0 / s, 0.0) for s in range(1, 2001)]})
    assert curve["first"] == 1 and curve["last"] == 2000 and len(curve["lines"][0]["d"].split()) <= 402


@pytest.mark.parametrize("value, expected", [
    ("marker-0003", False), ("e000008@0.5", False), ("a.b", False), ("..", True), ("../x", True), ("x/../y", True),
    ("%2e%2e%2fetc", True), ("/etc/passwd", True), ("~root", True), ("a\\b", True), ("a%00b", True),
])
def test_path_like_values(value, expected):
    assert looks_like_path(value) is expected


def _ask(guard: Guard, method: str = "GET", path: str = "/", query: bytes = b"", headers: dict | None = None):
    """Run one request through the guard alone; returns (status, headers, body) of its answer."""
    sent: list[dict] = []
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    guard.app = app
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_the_guard_trades_the_token_for_a_cookie_and_checks_every_action():
    guard = Guard(None, "secret-token", {"127.0.0.1:9000"}, 9000)
    host = {"Host": "127.0.0.1:9000"}
    status, headers, _ = _ask(guard, query=b"token=secret-token&x=1", headers=host)
    assert status == 303 and headers[b"location"] == b"/?x=1"
    assert headers[b"set-cookie"].startswith(b"kr_review_9000=secret-token; HttpOnly; SameSite=Strict")
    assert _ask(guard, headers=host)[0] == 403
    assert _ask(guard, query="token=é".encode(), headers=host)[0] == 403  # any text, compared safely
    ok = {**host, "Cookie": "kr_review_9000=secret-token"}
    assert _ask(guard, headers=ok)[:1] == (200,)
    assert b"default-src 'none'" in _ask(guard, headers=ok)[1][b"content-security-policy"]
    assert _ask(guard, headers={**ok, "Host": "evil.example:9000"})[0] == 421
    action = {**ok, "Content-Type": "application/json", "X-KR-CSRF": guard.csrf, "Origin": "http://127.0.0.1:9000"}
    assert _ask(guard, "POST", "/api/rate", headers=action)[0] == 200
    assert _ask(guard, "POST", "/api/rate", headers={**action, "X-KR-CSRF": "x"})[0] == 403
    assert _ask(guard, "POST", "/api/rate", headers={**action, "Origin": "null"})[0] == 403
    assert _ask(guard, "POST", "/api/rate", headers={**action, "Content-Type": "text/plain"})[0] == 415
    guard.read_only = True
    assert _ask(guard, "POST", "/api/rate", headers=action)[0] == 403
    assert _ask(guard, headers=ok)[0] == 200
