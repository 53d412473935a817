"""The records of ``dlinfer bench``, and their JSON, CSV, table and plot forms.

Record fields (JSON ``records`` entries, CSV columns, and ``benchmark()``'s dicts):

=====================================  ==========================================================
field                                  meaning
=====================================  ==========================================================
``model``                              the ONNX file's name
``model_name``                         the spec's model name, or the file's stem
``method``                             ``dlinfer`` (``Model.run``), ``keras.predict_on_batch`` or
                                       ``keras.tf_function`` (a ``tf.function`` around the model)
``device``                             the device asked for: ``cpu``, ``cuda:N``, ``tensorrt:N``,
                                       ``auto``; Keras rows: ``cpu`` or ``gpu`` (what TF sees)
``provider``                           the execution provider that actually ran (``session.
                                       get_providers()[0]``); Keras rows: ``tensorflow``
``providers``                          all active providers, ``;``-separated
``batch_size``                         items per call
``input_shape``                        the input array's shape, e.g. ``8x28x28x1`` (uint8 pixels
                                       when ``end_to_end``)
``threads``                            onnxruntime intra-op threads (Keras rows: TF's setting,
                                       0 = TF's default)
``io_binding``                         CPU: ``Model(io_binding=True)`` with a preallocated output;
                                       CUDA: device-resident IOBinding buffers, timed per stage
``end_to_end``                         the timed call includes preprocessing from uint8 pixels
``warmup``                             untimed calls before timing
``iters``                              timed calls
``windows``                            timing windows (about 0.25 s each)
``stop``                               ``stable`` (median moved < ``stability_pct``),
                                       ``time_cap`` (``max_seconds`` reached first), ``iters``
                                       (fixed count asked for) or ``duration`` (fixed time)
``stability_pct``                      the stability threshold, percent
``median_change_pct``                  change of the median between the last two windows, percent
                                       (null with one window)
``seconds``                            wall time spent timing the cell
``latency_ms_mean``                    mean latency per call, ms
``latency_ms_min``                     fastest call, ms
``latency_ms_p50``                     median latency, ms
``latency_ms_p90``                     90th percentile latency (linear interpolation), ms
``latency_ms_p95``                     95th percentile latency, ms
``latency_ms_p99``                     99th percentile latency, ms
``latency_ms_max``                     slowest call, ms
``items_per_s``                        throughput: ``batch_size / latency_ms_p50 * 1000``
``preprocess_ms_p50``                  median uint8 -> float32 preprocessing time (``end_to_end``;
                                       else null)
``h2d_ms_p50``                         median host-to-device copy (CUDA with ``io_binding``; else
                                       null)
``compute_ms_p50``                     median of the run itself (for CUDA ``io_binding``: the
                                       run on device-resident buffers, synchronized; else the
                                       model call minus preprocessing)
``d2h_ms_p50``                         median device-to-host copy (CUDA with ``io_binding``; else
                                       null)
``speedup_vs_keras_predict_on_batch``  Keras ``predict_on_batch`` p50 / this row's p50, same batch
                                       (dlinfer rows with ``compare_keras``; > 1: dlinfer faster)
``speedup_vs_keras_tf_function``       the same against the ``tf.function`` baseline
``onnxruntime``                        onnxruntime version
``cpu``                                CPU model
``gpu``                                first GPU's name, or null
=====================================  ==========================================================

The JSON file is ``{"schema": "dlinfer.bench/1", "created", "settings", "environment",
"providers_ran", "crossover", "records"}``: ``environment`` is ``dlinfer doctor``'s
facts, ``providers_ran`` the providers that really executed the rows, and
``crossover`` maps each method to the smallest batch size at which CUDA's
throughput beats CPU's (null when CUDA never does or was not run).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["FIELDS", "SCHEMA", "BenchResults"]

SCHEMA = "dlinfer.bench/1"

FIELDS = [
    "model", "model_name", "method", "device", "provider", "providers", "batch_size",
    "input_shape", "threads", "io_binding", "end_to_end", "warmup", "iters", "windows",
    "stop", "stability_pct", "median_change_pct", "seconds",
    "latency_ms_mean", "latency_ms_min", "latency_ms_p50", "latency_ms_p90",
    "latency_ms_p95", "latency_ms_p99", "latency_ms_max", "items_per_s",
    "preprocess_ms_p50", "h2d_ms_p50", "compute_ms_p50", "d2h_ms_p50",
    "speedup_vs_keras_predict_on_batch", "speedup_vs_keras_tf_function",
    "onnxruntime", "cpu", "gpu",
]


def _short(provider: str) -> str:
    return provider.replace("ExecutionProvider", "")


class BenchResults(list):
    """The records of one ``benchmark()`` run (a list of dicts, one per cell).

    ``environment`` holds ``dlinfer doctor``'s facts and ``settings`` the arguments.
    """

    def __init__(self, records: Sequence[dict[str, Any]], environment: dict[str, Any],
                 settings: dict[str, Any]) -> None:
        super().__init__(records)
        self.environment = environment
        self.settings = settings

    @property
    def providers_ran(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self:
            for p in str(r["providers"]).split(";"):
                seen[p] = None
        return list(seen)

    def crossover(self) -> dict[str, dict[str, Any] | None]:
        """For each method run on both CPU and CUDA: the first batch where CUDA wins."""
        out: dict[str, dict[str, Any] | None] = {}
        for method in dict.fromkeys(r["method"] for r in self):
            rows = [r for r in self if r["method"] == method]
            cpu = {r["batch_size"]: r for r in rows if r["provider"] == "CPUExecutionProvider"}
            gpu = {r["batch_size"]: r for r in rows
                   if r["provider"] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")}
            common = sorted(set(cpu) & set(gpu))
            if not common:
                continue
            wins = [b for b in common if gpu[b]["items_per_s"] > cpu[b]["items_per_s"]]
            out[method] = {
                "batch_size": wins[0] if wins else None,
                "gpu_provider": gpu[common[0]]["provider"],
                "compared_batch_sizes": common,
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": self.settings,
            "environment": self.environment,
            "providers_ran": self.providers_ran,
            "crossover": self.crossover(),
            "records": [dict(r) for r in self],
        }

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in self:
            writer.writerow({k: ("" if r[k] is None else r[k]) for k in FIELDS})
        if path is not None:
            with open(path, "w", newline="") as f:
                f.write(buf.getvalue())
        return buf.getvalue()

    def table(self) -> str:
        """A fixed-width text table of the main columns."""
        head = (f"{'method':<24} {'device':<8} {'provider':<13} {'batch':>5} {'p50 ms':>9} "
                f"{'p90 ms':>9} {'p99 ms':>9} {'items/s':>11} {'stop':<9} {'vs keras':>9}")
        lines = [head, "-" * len(head)]
        for r in self:
            vs = r["speedup_vs_keras_predict_on_batch"]
            lines.append(
                f"{r['method']:<24} {r['device']:<8} {_short(r['provider']):<13} "
                f"{r['batch_size']:>5} {r['latency_ms_p50']:>9.4f} {r['latency_ms_p90']:>9.4f} "
                f"{r['latency_ms_p99']:>9.4f} {r['items_per_s']:>11.1f} {r['stop']:<9} "
                f"{'' if vs is None else f'{vs:.2f}x':>9}"
            )
        for method, c in self.crossover().items():
            if c is not None:
                where = (f"from batch {c['batch_size']}" if c["batch_size"] is not None
                         else f"at none of batch sizes {c['compared_batch_sizes']}")
                lines.append(f"{method}: CUDA beats CPU {where}")
        lines += self._backend_ratios() + self._input_shapes()
        from ..runtime.assignment import describe

        for device, placed in (self.settings.get("assignment") or {}).items():
            lines += [f"{device}: {line}" for line in describe(placed)]
        return "\n".join(lines)

    def _input_shapes(self) -> list[str]:
        """The input shapes timed, and which of their sizes were drawn, not the model's."""
        shapes = list(dict.fromkeys(r["input_shape"] for r in self if r.get("input_shape")))
        if not shapes:
            return []
        drawn = self.settings.get("drawn_axes") or {}
        where = "; ".join(f"{name} axes {', '.join(map(str, axes))}"
                          for name, axes in drawn.items())
        return [f"input shapes timed: {', '.join(shapes)}" + (
            f" (dynamic sizes drawn, not the model's: {where}; set them with --input-shape "
            "NAME=SHAPE)" if drawn else "")]

    def _backend_ratios(self) -> list[str]:
        """``bench --backend onnxruntime,openvino``: each backend's items/s against
        onnxruntime's on the same CPU, per batch size."""
        base = {r["batch_size"]: r["items_per_s"] for r in self
                if r["method"] == "dlinfer" and r["provider"] == "CPUExecutionProvider"}
        others: dict[str, list[str]] = {}
        for r in self:
            if r["method"] == "dlinfer" and r["provider"].startswith("OpenVINO") and \
                    base.get(r["batch_size"]):
                ratio = r["items_per_s"] / base[r["batch_size"]]
                others.setdefault(r["provider"], []).append(f"batch {r['batch_size']} "
                                                            f"{ratio:.2f}x")
        lines = [f"{p} vs onnxruntime CPU, items/s: {', '.join(v)}" for p, v in others.items()]
        # what backend="auto" picked, and why (its measurement)
        return lines + [f"{device}: {why}" for device, why in
                        (self.settings.get("backend_choice") or {}).items() if "auto" in why]

    def plot(self, path: str | os.PathLike[str]) -> str:
        """Latency and throughput against batch size per device; matplotlib (``dlinfer[plot]``)."""
        from .plot import plot_results

        return plot_results(self, path)


# -- the API -------------------------------------------------------------------------------


