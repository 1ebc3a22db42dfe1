"""`kr review` as a real subprocess for the board's tests, and a small HTTP client that sends exactly the
headers a test gives it (http.client: no cookie jar, no redirects followed, no proxy, nothing implied)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

URL_LINE = re.compile(r"kr review: (http://[^\s]+)")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Board:
    process: subprocess.Popen
    url: str  # the printed link, token included
    lines: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname

    @property
    def port(self) -> int:
        return urlsplit(self.url).port

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        return self.url.rsplit("token=", 1)[1]

    @property
    def cookie(self) -> str:
        return f"kr_review_{self.port}={self.token}"

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
                cookie: bool = True) -> Answer:
        sent = {"Host": f"{self.host}:{self.port}"}
        if cookie:
            sent["Cookie"] = self.cookie
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        sent.update(headers or {})
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in sent.items():
                if value is not None:
                    connection.putheader(key, value)
            connection.putheader("Content-Length", str(len(body or b"")))
            connection.endheaders(body or b"")
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def get(self, path: str, **kw) -> Answer:
        return self.request("GET", path, **kw)

    def csrf(self) -> str:
        page = self.get("/").text
        return re.search(r'name="kr-csrf" content="([0-9a-f]+)"', page).group(1)

    def act(self, path: str, data: dict, reviewer: str | None = None, headers: dict | None = None) -> Answer:
        """A POST as the board's own page sends it: JSON, the CSRF header, its own Origin."""
        sent = {"Content-Type": "application/json", "X-KR-CSRF": self.csrf(), "Origin": self.base,
                "Sec-Fetch-Site": "same-origin"}
        if reviewer:
            from urllib.parse import quote

            sent["Cookie"] = f"{self.cookie}; kr_reviewer={quote(reviewer)}"
        sent.update(headers or {})
        return self.request("POST", path, data, headers=sent)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_board(home: Path, *args: str, timeout: float = 60) -> Board:
    """`kr review --port 0 …` in its own process; returns once it printed its link and answers."""
    env = dict(os.environ, KR_HOME=str(home), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "kohya_runner", "review", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        found = URL_LINE.search(line)
        if found:
            board = Board(process, found.group(1), lines)
            _drain(process, lines)
            return board
    process.kill()
    raise AssertionError("kr review printed no link:\n" + "\n".join(lines))


def _drain(process: subprocess.Popen, lines: list[str]) -> None:
    """Keep reading the board's output (so it never blocks on a full pipe), into `lines`."""
    import threading

    def read():
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()


# -- for the browser tests ----------------------------------------------------------------------------


def shots_folder(tmp_path: Path) -> Path:
    """Where screenshots go: $KR_TEST_ARTIFACTS (kept for looking at), else the test's tmp folder."""
    folder = Path(os.environ.get("KR_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(what, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {getattr(what, '__name__', what)}")


def only_local(browser, board: Board) -> None:
    """Every request the browser made went to the board, and the page logged no error."""
    requests = browser.requests()
    outside = [u for u in requests if not u.startswith(board.base + "/") and u not in ("about:blank",)
               and not u.startswith("data:")]
    assert requests and not outside, outside
    errors = [entry for entry in browser.driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
