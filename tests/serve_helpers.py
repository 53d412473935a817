"""Driving `dlinfer serve` from tests: a server subprocess, an HTTP client, raw sockets,
hand-written PNGs and the /metrics text.

Nothing here asserts on wall time; the waits have generous limits that only a hung
server reaches.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib

__all__ = ["Server", "call", "free_port", "metric_samples", "multipart", "post_json",
           "raw_request", "zero_png"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _limit_files(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class Server:
    """``dlinfer serve ARGS`` on a free loopback port, its output in a log file;
    ``max_files`` sets its descriptor limit (RLIMIT_NOFILE, soft and hard)."""

    def __init__(self, tmp_path, *args: str, max_files: int | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp_path / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dlinfer", "serve", *args, "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=None if max_files is None else lambda: _limit_files(max_files),
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if call(self, "GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server never became ready:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def call(server, method, path, body=None, headers=None, timeout=60):
    """(status, parsed JSON or text) of one request."""
    req = urllib.request.Request(server.base + path, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, ctype, data = resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as err:
        status, ctype, data = err.code, err.headers.get("content-type", ""), err.read()
    return status, json.loads(data) if "json" in ctype else data.decode()


def post_json(server, path, payload):
    return call(server, "POST", path, json.dumps(payload).encode(),
                {"content-type": "application/json"})


def multipart(files: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        for name, data in files.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "content-type": f"multipart/form-data; boundary={boundary}"}


def raw_request(server, path: str, length: int, first: bytes = b"") -> socket.socket:
    """An open connection that declared a body of ``length`` bytes and sent ``first``."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode() + first)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the answer on ``sock`` (the server closes it after)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")]
        if length and len(body) >= length[0]:
            break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def zero_png(width: int, height: int, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """A valid all-black PNG (gray by default; 6 is RGBA), written by hand: a few hundred
    KB that declare a huge image (zeros deflate about 1000:1), never holding its pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    deflate = zlib.compressobj(9)
    # filter byte 0, then the samples
    row = bytes(1 + width * _PNG_CHANNELS[color_type] * bit_depth // 8)
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = (width.to_bytes(4, "big") + height.to_bytes(4, "big")
              + bytes([bit_depth, color_type, 0, 0, 0]))  # deflate, no filter, no interlace
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def metric_samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
