"""Issue 28: `dlinfer serve` bounds every connection (dlinfer.serving.connections).

Connections that send nothing, half a request line, or trickle a head are closed at the
head deadline (``--head-timeout-s``); past ``--max-connections`` (by default what the
descriptor limit leaves), connections waiting for a request are closed longest-waiting
first, so a client that sends one is served.  Every socket is on the loopback address.
"""

from __future__ import annotations

import resource
import socket
import threading
import time

import pytest
from optional import requires
from serve_helpers import Server, call, read_response

serving = requires("starlette", "uvicorn", "prometheus_client")

HEAD_TIMEOUT_S = 2
# Long enough that no scheduler hiccup reaches it, short of a hung server.
HANG_S = 30
# The bound for a normal client while the floods are held open.
ANSWER_S = 1.0
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Ag"


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=HANG_S)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a hang fails)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def still_open(sock: socket.socket) -> bool:
    """Whether the server has neither closed ``sock`` nor sent anything on it."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # an answer or the end: the server acted on it
        return False
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(HANG_S)


def timed_predict(server, png: bytes) -> tuple[int, float]:
    started = time.monotonic()
    status, body = call(server, "POST", "/v1/models/mnist/predict", png, timeout=HANG_S)
    return status, time.monotonic() - started


@pytest.fixture(scope="module")
def server(mnist_onnx, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("connections"), f"mnist={mnist_onnx}", "--threads", "1",
                 "--head-timeout-s", str(HEAD_TIMEOUT_S), "--log-level", "warning")
    yield srv
    assert srv.stop() == 0, srv.output()


@serving
def test_idle_and_half_head_floods_are_closed_and_a_client_is_served(server, digit_pngs):
    png = open(digit_pngs[0][0], "rb").read()
    opened = time.monotonic()
    idle = [connect(server.port) for _ in range(200)]
    half = [connect(server.port) for _ in range(200)]
    for sock in half:
        sock.sendall(HALF_HEAD)

    # A head trickled one byte at a time is cut at the deadline, not kept alive by its bytes.
    trickled: list[bytes] = []

    def trickle() -> None:
        with connect(server.port) as sock:
            sock.settimeout(0.3)
            for byte in HALF_HEAD + b"x" * 1000:
                try:
                    sock.sendall(bytes([byte]))
                    if data := sock.recv(65536):
                        trickled.append(data)
                        return
                except TimeoutError:
                    continue
                except OSError:  # reset after the server closed it
                    return

    trickler = threading.Thread(target=trickle)
    trickler.start()

    for _ in range(3):
        status, seconds = timed_predict(server, png)
        assert status == 200 and seconds < ANSWER_S, (status, seconds)
    assert sum(still_open(sock) for sock in idle + half) == 400  # answered while all held

    for sock in idle:
        assert read_until_closed(sock) == b""  # closed without a word: nothing was asked
    for sock in half:
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b"--head-timeout-s" in answer
    assert time.monotonic() - opened >= HEAD_TIMEOUT_S  # not before the deadline
    trickler.join(HANG_S)
    assert trickled and trickled[0].startswith(b"HTTP/1.1 408 ")
    for sock in idle + half:
        sock.close()
    assert call(server, "GET", "/healthz")[0] == 200


@serving
def test_a_kept_alive_connection_gets_the_head_deadline_again(server):
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock) == (200, {"status": "ok", "models": ["mnist"]})
        sock.sendall(HALF_HEAD)  # the next request never finishes its head
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


@serving
def test_1100_idle_sockets_against_1024_descriptors_leave_room_for_a_client(
        mnist_onnx, digit_pngs, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1100 + 300  # the idle sockets, and what pytest itself holds open
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"this test process may open only {hard} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    # A head deadline far beyond the test: only the connection cap can free descriptors.
    server = Server(tmp_path, f"mnist={mnist_onnx}", "--threads", "1", "--head-timeout-s", "600",
                    "--log-level", "warning", max_files=1024)
    idle: list[socket.socket] = []
    try:
        idle = [connect(server.port) for _ in range(1100)]
        png = open(digit_pngs[0][0], "rb").read()
        status, body = call(server, "POST", "/v1/models/mnist/predict", png, timeout=10)
        assert status == 200, body
        assert call(server, "GET", "/healthz", timeout=10)[0] == 200
        assert "closing those waiting for a request" in server.output()
    finally:
        for sock in idle:
            sock.close()
        assert server.stop() == 0, server.output()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class FakeConnection:
    def __init__(self, name: str, closed: list[str]) -> None:
        self.name, self.closed = name, closed

    def close_idle(self) -> None:
        self.closed.append(self.name)


@serving
def test_the_cap_closes_connections_waiting_for_a_request_longest_waiting_first():
    from dlinfer.serving.connections import ConnectionLimits, _Registry

    closed: list[str] = []
    registry = _Registry(ConnectionLimits(head_timeout_s=10, max_connections=3))
    conns = {name: FakeConnection(name, closed) for name in "abcdefg"}
    for name in "abc":
        registry.opened(conns[name])
    registry.busy(conns["b"])  # b's request is in progress: never closed for the cap
    registry.opened(conns["d"])
    assert closed == ["a"]
    registry.opened(conns["e"])
    assert closed == ["a", "c"]
    registry.idle(conns["b"])  # b answered: now it waits the least
    registry.opened(conns["f"])
    assert closed == ["a", "c", "d"]
    registry.busy(conns["e"])
    registry.busy(conns["b"])
    registry.busy(conns["f"])
    registry.opened(conns["g"])  # nothing else waits: the newcomer itself is closed
    assert closed == ["a", "c", "d", "g"]
