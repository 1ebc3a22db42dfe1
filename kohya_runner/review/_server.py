"""Starting the review board: check the stack, bind the socket (127.0.0.1 unless told), print the link.

The socket is bound here, before the web server starts, so a taken port is a clear error, `--port 0`
picks a free one, and the printed link always names the port that really listens.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BadInput

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8765
ANY_ADDRESS = {"0.0.0.0", "::"}


@dataclass
class Listening:
    sock: socket.socket
    host: str
    port: int
    url: str  # with the launch's token
    hosts: set[str]  # the Host headers the board answers to


def require_stack() -> None:
    """Starlette and uvicorn come with the `review` extra; say how to get them, before anything else."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise BadInput(f"kr review needs its web stack ({error.name} is not installed). "
                       "Fix: pip install 'kohya-runner[review]'") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int, token: str) -> Listening:
    """A listening socket on host:port. Raises BadInput for a taken port or an address this machine lacks."""
    if not 0 <= port <= 65535:
        raise BadInput(f"--port {port} is not a port. Fix: 1024–65535, or 0 for any free port")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise BadInput(f"--host {host!r} is not an address of this machine ({error.strerror}). "
                       "Fix: leave --host out (127.0.0.1), or give one of this machine's addresses") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise BadInput(f"port {port} on {host} is in use. Fix: --port another number, or --port 0 for any "
                           "free port") from None
        raise BadInput(f"cannot listen on {host}:{port}: {error.strerror}. Fix: --host one of this machine's "
                       "addresses, or leave it out") from None
    sock.set_inheritable(False)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if host in ANY_ADDRESS:
        shown = LOOPBACK
    return Listening(sock, host, bound, f"http://{shown}:{bound}/?token={token}", _hosts(host, bound))


def _hosts(host: str, port: int) -> set[str]:
    """Host headers to answer: the loopback names always, the given host, and with 0.0.0.0 / :: every
    address and the name of this machine (a browser elsewhere uses one of them)."""
    names = {LOOPBACK, "localhost", "[::1]"}
    if host in ANY_ADDRESS:
        import psutil

        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family in (socket.AF_INET, socket.AF_INET6):
                    text = address.address.split("%")[0]
                    names.add(f"[{text}]" if ":" in text else text)
        names |= {socket.gethostname(), socket.getfqdn()}
    else:
        names.add(f"[{host}]" if ":" in host else host)
    return {f"{name}:{port}" for name in names}


def serve(home: Path, *, host: str = LOOPBACK, port: int = DEFAULT_PORT, read_only: bool = False,
          releases: Path | None = None, say: Callable[[str], None] = print,
          warn: Callable[[str], None] = print) -> None:
    """Run the board until Ctrl-C (or SIGTERM). Everything is checked before the socket is bound."""
    require_stack()
    import uvicorn

    from ._app import build_app
    from ._board import Board
    from ._guard import Guard, new_token

    home = Path(home)
    releases = Path(releases).expanduser().resolve() if releases else home / "releases"
    if releases.exists() and not releases.is_dir():
        raise BadInput(f"--releases {releases} is a file. Fix: give a folder for released LoRAs")
    token = new_token()
    listening = listen(host, port, token)
    board = Board(home, releases, read_only=read_only)
    app = Guard(build_app(board), token, listening.hosts, listening.port, read_only)
    if not is_loopback(host):
        warn(f"Warning: kr review listens on {host}:{listening.port}, reachable from other machines. Anyone with "
            "the link can see every run of this workspace" + ("" if read_only else ", rate, release and start jobs")
            + "; the traffic is plain HTTP (not encrypted). Use --read-only to show results to a client.")
    say(f"kr review: {listening.url}")
    if not is_loopback(host):
        name = socket.gethostname() if host in ANY_ADDRESS else (f"[{host}]" if ":" in host else host)
        say(f"  from other machines: http://{name}:{listening.port}/?token={token}")
    say(f"  workspace {home}" + (" (read-only)" if read_only else f"; releases go to {releases}") + "; Ctrl-C stops it")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                            proxy_headers=False, timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[listening.sock])
