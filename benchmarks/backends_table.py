"""The table of ``bench_backends.py``: dlinfer's deployed configuration against the best
peer at each batch size, and where the time goes; read back from ``results/backends.cpu.json``
by ``bench_backends.py --table-from``."""

from __future__ import annotations

import json
from typing import Any

import bench_optimize

BATCHES = (1, 32)
PEERS = ("openvino", "openvino_nncf_int8", "litert_int8")


def _ratio(row: dict[str, Any], name: str, batch: int) -> float:
    return row["times"]["onnxruntime"][batch] / row["times"][name][batch]


def _cell(row: dict[str, Any], name: str | None) -> str:
    if name is None or name not in row["times"]:
        return "-"
    acc = row["accuracy"].get(name)
    tail = f", {acc:.2%}" if acc is not None else ""
    return f"{_ratio(row, name, 32):.2f}x ({_ratio(row, name, 1):.2f}x){tail}"


_PEER_NAMES = {"openvino": "OpenVINO", "openvino_nncf_int8": "NNCF int8",
               "litert_int8": "LiteRT int8"}


def _where(row: dict[str, Any], peers: dict[int, str]) -> str:
    """Which peer was best, and dlinfer's Model against its backend run raw on the same
    file (the auto-rule candidate's, batch 32 (batch 1)): above 1.00x is dlinfer's cost."""
    text = f"best peer {_PEER_NAMES[peers[32]]} ({_PEER_NAMES[peers[1]]})"
    pair = row.get("same_file")
    if not pair:
        return text
    deployed = row["deployed"]
    tax = [pair[deployed][b] / pair["same_file_raw"][b] for b in (32, 1)]
    return (f"{text}; {deployed.removeprefix('dlinfer_')} file: Model {tax[0]:.2f}x "
            f"({tax[1]:.2f}x) the time of its backend run raw")


def _deployed_cell(row: dict[str, Any], name: str, batch: int) -> str:
    mode = name.removeprefix("dlinfer_")
    acc = row["accuracy"].get(name)
    return (f"{mode} on {row['opened_on'][mode]}: {_ratio(row, name, batch):.2f}x"
            + (f", {acc:.2%}" if acc is not None else ""))


def table(rows: list[dict[str, Any]]) -> str:
    lines = bench_optimize._header(
        "model; float32 accuracy; dlinfer at 32; dlinfer at 1; OpenVINO default; NNCF int8; "
        "LiteRT int8; tf.function; dlinfer / best peer at 32 (1); where the time goes",
        "lrllllllll")
    for row in rows:
        candidates = [n for n in row["times"] if n.startswith("dlinfer_")]
        base = row["accuracy"]["onnxruntime"]
        cells = ["nothing passed the gate"] * 2
        verdict = where = "-"
        if candidates:
            # For each batch size, the gated file and backend that runs it fastest.
            best = {b: max(candidates, key=lambda n, b=b: _ratio(row, n, b)) for b in BATCHES}
            peers = {b: max(PEERS, key=lambda p, b=b: _ratio(row, p, b)) for b in BATCHES}
            shares = [_ratio(row, best[b], b) / _ratio(row, peers[b], b) for b in (32, 1)]
            mark = "yes" if min(shares) >= 0.95 else "**no**"
            verdict = f"{shares[0]:.2f} ({shares[1]:.2f}) {mark}"
            where = _where(row, peers)
            cells = [_deployed_cell(row, best[32], 32), _deployed_cell(row, best[1], 1)]
        base_cell = "n/a (random weights)" if base is None else f"{base:.2%}"
        lines.append(f"| {row['name']} | {base_cell} | {cells[0]} | {cells[1]} | "
                     f"{_cell(row, 'openvino')} | "
                     f"{_cell(row, 'openvino_nncf_int8')} | {_cell(row, 'litert_int8')} | "
                     f"{_cell(row, 'tf.function')} | {verdict} | {where} |")
    return "\n".join(lines)


def load_rows(path: str) -> list[dict[str, Any]]:
    """Rows written by a run (``results/backends.cpu.json``), batch sizes back to ints."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    for row in rows:
        for key in ("times", "same_file"):
            if row.get(key):
                row[key] = {n: {int(b): t for b, t in by.items()} for n, by in row[key].items()}
    return rows


def write_readme(readme: str, body: str) -> None:
    """Replace the text between the ``<!-- backends -->`` markers, or append the section."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    start, end = "<!-- backends -->", "<!-- /backends -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + start + "\n" + body + "\n" + end + "\n"
    with open(readme, "w", encoding="utf-8") as f:
        f.write(text)
