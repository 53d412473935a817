"""The ``dlinfer bench --plot`` figure: latency and throughput against batch size.

matplotlib is imported only here, and only when a plot is asked for; it comes with
the ``dlinfer[plot]`` extra (and ``[test]``, whose tests check the PNG).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["plot_results"]

_GPU = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install 'dlinfer[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_results(records: Sequence[dict[str, Any]], path: str | os.PathLike[str],
                 title: str | None = None) -> str:
    """Draw ``records`` (one model) to ``path`` as PNG; returns the path.

    Left: p50 latency per call with a p90-p99 band; right: items/s.  One line per
    (method, device/provider).  Where both CPU and CUDA ran, a dashed line marks the
    first batch size at which CUDA's throughput beats CPU's.
    """
    plt = _pyplot()
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        key = (r["method"], f"{r['device']} ({r['provider'].replace('ExecutionProvider', '')})")
        series.setdefault(key, []).append(r)
    for (method, device), rows in series.items():
        rows = sorted(rows, key=lambda r: r["batch_size"])
        xs = [r["batch_size"] for r in rows]
        label = f"{method} on {device}" + (" (io_binding)" if rows[0]["io_binding"] else "")
        line, = lat.plot(xs, [r["latency_ms_p50"] for r in rows], marker="o", label=label)
        lat.fill_between(xs, [r["latency_ms_p90"] for r in rows],
                         [r["latency_ms_p99"] for r in rows], color=line.get_color(), alpha=0.15)
        thr.plot(xs, [r["items_per_s"] for r in rows], marker="o", label=label,
                 color=line.get_color())

    _mark_crossover(records, lat, thr)
    for ax, ylabel in ((lat, "latency per call, ms (p50; band p90-p99)"), (thr, "items / s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    sizes = sorted({r["batch_size"] for r in records})
    for ax in (lat, thr):
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
    thr.legend(fontsize=8, loc="best")
    if records:
        r0 = records[0]
        hw = r0["cpu"] + (f" + {r0['gpu']}" if r0.get("gpu") else ", no GPU")
        fig.suptitle(title or f"{r0['model_name']}: onnxruntime {r0['onnxruntime']} on {hw}",
                     fontsize=10)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return os.fspath(path)


def _mark_crossover(records: Sequence[dict[str, Any]], lat: Any, thr: Any) -> None:
    cpu = {r["batch_size"]: r["items_per_s"] for r in records
           if r["method"] == "dlinfer" and r["provider"] == "CPUExecutionProvider"}
    gpu = {r["batch_size"]: r["items_per_s"] for r in records
           if r["method"] == "dlinfer" and r["provider"] in _GPU}
    common = sorted(set(cpu) & set(gpu))
    if not common:
        return
    wins = [b for b in common if gpu[b] > cpu[b]]
    if wins:
        for ax in (lat, thr):
            ax.axvline(wins[0], color="black", linestyle="--", linewidth=1)
        thr.annotate(f"CUDA beats CPU from batch {wins[0]}", xy=(wins[0], gpu[wins[0]]),
                     xytext=(5, -15), textcoords="offset points", fontsize=8)
    else:
        thr.text(0.02, 0.02, f"CUDA never beats CPU up to batch {common[-1]}",
                 transform=thr.transAxes, fontsize=8)
