"""`bench_serve.py --soak S`: C keep-alive HTTP clients against one `dlinfer serve` for S
seconds, a fraction of them sending bad requests, then /metrics checked against what
was sent.

Every answer is checked: a good request must get 200 and the prediction a direct
``Classifier.predict`` gives (label, top index, probability within 1e-5), a bad one
its exact status and ``error`` code.  Anything else (a wrong status, a dropped
connection) counts as lost.  After the load, each of several scrapes of /metrics
(answered by whichever worker process takes it) must count, per outcome, exactly the
requests sent.  The server's resident memory (every process) is read from /proc.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

PREDICT = "/v1/models/{name}/predict"

# (outcome, status, path suffix, content type, body): the bad requests, in rotation.
_WRONG_SHAPE = json.dumps({"image": np.full((5, 7), 0.5).tolist()}).encode()
BAD = [
    ("not_an_image", 400, "", "image/png", b"this is not an image"),
    ("bad_json", 400, "", "application/json", b"{oops"),
    ("bad_input", 422, "", "application/json", _WRONG_SHAPE),
    ("bad_parameter", 400, "?timeout_ms=nan", "image/png", None),  # None: a good body
    ("unknown_model", 404, "", "image/png", None),
]


def _rss_mb(pid: int) -> dict[int, float]:
    """Resident MB of ``pid`` and its child processes (the uvicorn workers)."""
    out = {}
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            out[p] = kb / 1024
        except (OSError, StopIteration):
            pass
    return out


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _requests_per_process(folder: str | None) -> dict[str, int]:
    """Predict requests each worker counted, from its own file in the multiprocess folder."""
    import glob

    from prometheus_client.mmap_dict import MmapedDict

    out = {}
    for path in sorted(glob.glob(os.path.join(folder or "", "counter_*.db"))) if folder else []:
        n = 0
        for key, value, *_ in MmapedDict.read_all_values_from_file(path):
            name, sample, labels, *_ = json.loads(key)
            if sample == "dlinfer_http_requests_total" and labels.get("route") == PREDICT:
                n += value
        out[os.path.basename(path)[len("counter_"):-len(".db")]] = int(n)
    return out


async def _client(port: int, name: str, bodies: list[bytes], counter: Any, stop_at: float,
                  bad_every: int, sent: dict[str, int], checker: Any, lost: list[str],
                  lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            i = next(counter)
            if bad_every and i % bad_every == bad_every - 1:
                outcome, status, query, ctype, body = BAD[(i // bad_every) % len(BAD)]
                body = bodies[i % len(bodies)] if body is None else body
                model = "nope" if outcome == "unknown_model" else name
            else:
                outcome, status, query, ctype, body = "ok", 200, "", "image/png", None
                body, model = bodies[i % len(bodies)], name
            head = (f"POST /v1/models/{model}/predict{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            t0 = time.perf_counter()
            sent[outcome] += 1
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                if key.lower() == "content-length":
                    length = int(value)
            data = json.loads(await reader.readexactly(length))
            lat.append(time.perf_counter() - t0)
            got = int(status_line.split()[1])
            if outcome == "ok" and got == 200:
                p = data["predictions"][0]
                checker.check(i, p["label"], p["index"], p["probability"])
            elif got != status or data.get("error", "ok") != outcome:
                lost.append(f"request {i}: wanted {status} {outcome}, got {got} {data}")
    except (OSError, asyncio.IncompleteReadError) as exc:
        lost.append(f"connection failed: {exc!r}")
    finally:
        writer.close()


def soak(server: Any, name: str, bodies: list[bytes], checker: Any, clients: int,
         seconds: float, bad_fraction: float) -> int:
    """Run the soak against ``server`` (a started ServerProcess); 0 when nothing was lost,
    nothing mismatched and /metrics agrees with what was sent."""
    from prometheus_client.parser import text_string_to_metric_families

    bad_every = round(1 / bad_fraction) if bad_fraction > 0 else 0
    sent = {outcome: 0 for outcome, *_ in [("ok",), *BAD]}
    lost: list[str] = []
    lat: list[float] = []
    counter = itertools.count()
    rss_before = _rss_mb(server.proc.pid)

    async def main() -> float:
        stop_at = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(
            _client(server.port, name, bodies, counter, stop_at, bad_every, sent, checker,
                    lost, lat) for _ in range(clients)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    rss_after = _rss_mb(server.proc.pid)
    total = sum(sent.values())
    p50, p99 = np.percentile(np.array(lat) * 1000, [50, 99]) if lat else (0.0, 0.0)
    print(f"soak: {clients} clients for {elapsed:.1f} s, {total} requests "
          f"({total / elapsed:.0f}/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms), sent by outcome "
          f"{sent}; lost {len(lost)}, mismatched {checker.bad}")
    for line in lost[:5]:
        print("    " + line)

    metrics_ok = True
    for scrape in range(4):  # each scrape may be answered by a different worker
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            text = resp.read().decode()
        counted = {o: 0.0 for o in sent}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if (s.name == "dlinfer_http_requests_total" and s.labels["route"] == PREDICT
                        and s.labels["outcome"] in counted):
                    counted[s.labels["outcome"]] += s.value
        same = all(counted[o] == sent[o] for o in sent)
        metrics_ok &= same
        print(f"/metrics scrape {scrape + 1}: {({o: int(v) for o, v in counted.items()})} "
              f"{'= sent' if same else '!= sent'}")
    per_process = _requests_per_process(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    if per_process:
        print(f"predict requests counted per worker process (pid: count): {per_process}")
    mb = ", ".join(f"pid {p}: {v:.0f} MB" for p, v in rss_after.items())
    print(f"server RSS before {sum(rss_before.values()):.0f} MB, after "
          f"{sum(rss_after.values()):.0f} MB ({mb}); {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}")
    return 0 if not lost and checker.bad == 0 and metrics_ok else 1


def _zero_png(width: int, height: int, color_type: int = 0) -> bytes:
    """An all-black 8-bit PNG (0: gray, 6: RGBA) of a few hundred KB, whatever its size."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    deflate = zlib.compressobj(9)
    row = bytes(1 + width * {0: 1, 6: 4}[color_type])
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, color_type, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def _peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def hostile(server: Any, name: str) -> int:
    """The sweep's memory cases: a 656 KB PNG declaring 13000x13000 RGBA, then eight 97 KB
    10000x10000 PNGs at once while /healthz is polled.  0 when each gets its answer."""
    from concurrent.futures import ThreadPoolExecutor

    def post(body: bytes) -> tuple[int, float]:
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/models/{name}/predict",
                                     data=body, method="POST",
                                     headers={"content-type": "image/png"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status = resp.status
        except urllib.error.HTTPError as err:
            status = err.code
        return status, time.perf_counter() - t0

    bomb, large = _zero_png(13000, 13000, 6), _zero_png(10000, 10000)
    before = _peak_mb(server.proc.pid)
    status, took = post(bomb)
    print(f"13000x13000 RGBA PNG ({len(bomb):,} bytes): {status} in {took * 1000:.0f} ms; "
          f"server peak RSS {before:.0f} -> {_peak_mb(server.proc.pid):.0f} MB")
    ok = status == 413
    health: list[float] = []
    with ThreadPoolExecutor(8) as pool:
        uploads = [pool.submit(post, large) for _ in range(8)]
        while not all(u.done() for u in uploads):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=60):
                health.append(time.perf_counter() - t0)
        answers = [u.result() for u in uploads]
    ms = np.array(health) * 1000
    print(f"eight 10000x10000 PNGs ({len(large):,} bytes each): statuses "
          f"{sorted(s for s, _ in answers)}, slowest {max(t for _, t in answers):.2f} s; "
          f"/healthz meanwhile: {len(ms)} answers, median {np.median(ms):.1f} ms, "
          f"max {ms.max():.1f} ms; server peak RSS {_peak_mb(server.proc.pid):.0f} MB")
    return 0 if ok and all(s == 200 for s, _ in answers) else 1


def drain(server: Any, name: str, bodies: list[bytes], clients: int, seconds: float) -> int:
    """SIGTERM after ``seconds`` under C keep-alive clients: every request sent must get an
    answer (200, or 503 once the server stops) and the server must exit 0.  0 when so."""
    import collections
    import signal

    answers: collections.Counter[str] = collections.Counter()

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for i in itertools.count(k):
            body = bodies[i % len(bodies)]
            writer.write(f"POST /v1/models/{name}/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            try:
                status_line = await reader.readline()
            except OSError:  # reset: the server closed an idle connection as this arrived
                status_line = b""
            if not status_line:  # closed before this request was read: never taken
                answers["closed before the request"] += 1
                break
            try:
                length, close = 0, False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    key, _, value = line.decode().partition(":")
                    length = int(value) if key.lower() == "content-length" else length
                    close |= key.lower() == "connection" and "close" in value
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError):
                answers["lost mid-answer"] += 1
                break
            answers[status_line.split()[1].decode()] += 1
            if close:
                break
        writer.close()

    async def main() -> None:
        tasks = [asyncio.create_task(client(k)) for k in range(clients)]
        await asyncio.sleep(seconds)
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)

    asyncio.run(main())
    code = server.proc.wait(120)
    print(f"drain: SIGTERM after {seconds:g} s under {clients} clients: answers {dict(answers)}; "
          f"server exited {code}")
    return 0 if code == 0 and not answers["lost mid-answer"] else 1
