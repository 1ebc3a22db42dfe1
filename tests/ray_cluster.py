"""A real two-node Ray cluster on this one machine, for the `kr sweep --ray` tests: a head and a second node,
each started by `ray start` in its own session with one unit of the custom resource `kr_slot` standing in
for a GPU, token authentication on, usage statistics off, everything bound to 127.0.0.1.

Ray 2.60 rewrites 127.0.0.1 to the host's routable address (and listens on 0.0.0.0) unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with that set it refuses to let a second node join; run as a
script, this file is `ray start` with loopback kept and that refusal lifted (a test-only shim: real clusters
span machines and give each node its own address with --node-ip-address).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESOURCE = "kr_slot"


def _procs_in_session(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    """One `ray start` in its own session: the session id finds every process it spawned."""

    def __init__(self, name: str, temp_dir: Path, args: list[str], env: dict):
        self.name, self.temp_dir = name, temp_dir
        log = temp_dir.with_suffix(".log")
        with open(log, "w") as handle:
            process = subprocess.Popen([sys.executable, __file__, "start", *args, "--temp-dir", str(temp_dir),
                                        "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                                        "--log-style", "record"], stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True, env=env)
            self.sid = process.pid
            if process.wait(timeout=180) != 0:
                raise RuntimeError(f"ray start ({name}) failed: {log.read_text()[-2000:]}")

    def pids(self) -> list[int]:
        return _procs_in_session(self.sid)

    def kill(self) -> None:
        """The node dies: SIGKILL to its raylet, agents and GCS (its Ray worker processes then die with it)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 5.0) -> None:
        deadline = time.monotonic() + grace
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            deadline = time.monotonic() + grace


class Cluster:
    """head + one more node; `env` is what kr needs to join it (the token), `address` where."""

    def __init__(self, node_homes: dict[str, Path], node_env: dict[str, dict] | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="krray-", dir="/tmp"))  # short: AF_UNIX paths are limited
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(150 * 2**20),
                  "--resources", json.dumps({RESOURCE: 1})]
        self.nodes: dict[str, Node] = {}
        try:
            for name, home in node_homes.items():
                env = {**os.environ, **self.env, "KR_RAY_HOME": str(home), "OMP_NUM_THREADS": "1",
                       **(node_env or {}).get(name, {})}
                first = not self.nodes
                args = (["--head", "--port", str(self.port), "--include-dashboard", "false"] if first
                        else ["--address", self.address]) + common
                self.nodes[name] = Node(name, self.root / name, args, env)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def leftovers(self) -> list[int]:
        return [pid for node in self.nodes.values() for pid in node.pids()]


if __name__ == "__main__":  # `ray start` with loopback kept (see the module's docstring)
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services

    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: "127.0.0.1" if host in ("127.0.0.1", "localhost") else resolve(host)
    ray_constants.ENABLE_RAY_CLUSTER = True
    from ray.scripts.scripts import main

    sys.exit(main())
