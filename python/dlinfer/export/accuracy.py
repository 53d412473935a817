"""Top-1 accuracy of an export on a labelled folder, and ``--preprocess auto``.

The ONNX graph does not depend on how pixels are scaled (that is the spec's job), so
every preset is tried on the one converted graph: the folder's images are normalized
per the preset, run through onnxruntime, and scored against the class folders' labels
(:mod:`dlinfer.verification.labelled`).  The best preset is kept; a tie keeps the
convention the model itself suggested.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ExportError
from ..preprocessing.presets import PRESET_NAMES, apply_preprocess
from ..spec import InputSpec
from ..verification.labelled import folder_labels, is_labelled_folder, sample_count_note
from ..verification.samples import load_samples

__all__ = ["Head", "choose_preset", "format_table", "labelled_accuracy"]


@dataclass(frozen=True)
class Head:
    """The classifier output accuracy is measured on."""

    name: str
    labels: tuple[str, ...]
    threshold: float | None = None


def labelled_accuracy(outputs: np.ndarray, data: Any, head: Head) -> float | None:
    """Top-1 accuracy of ``outputs`` (one row per sample, in the order a labelled folder
    ``data`` gives them), or None when ``data`` is no labelled folder."""
    from ..optimize.gate import predicted_classes  # optimize imports export: import late

    if not (isinstance(data, (str, os.PathLike)) and is_labelled_folder(data)):
        return None
    predicted = predicted_classes(np.asarray(outputs, dtype=np.float64), head.threshold)
    if predicted is None:
        return None
    truth = folder_labels(os.fspath(data), len(predicted), head.labels)
    return float(np.mean(predicted == truth))


def choose_preset(session: Any, inputs: Sequence[InputSpec], data: Any, head: Head,
                  samples: int, seed: int, suggested: str | None,
                  changes: dict[str, Any]) -> tuple[list[InputSpec], str, dict[str, float]]:
    """The inputs with the single image input set to the preset that scores best on the
    labelled folder ``data``, that preset, and every preset's accuracy.

    ``changes``: fields the user set besides the preset (``--color``, ``--size`` ...),
    applied after each preset.
    """
    images = [i for i, s in enumerate(inputs) if s.kind == "image"]
    if len(images) != 1:
        raise ExportError(f"--preprocess auto chooses the preprocessing of one image input; "
                          f"the model has {len(images)}")
    if not (isinstance(data, (str, os.PathLike)) and is_labelled_folder(data)):
        raise ExportError("--preprocess auto scores each preset on labelled images: give "
                          "--data a folder with one sub-folder of images per class")
    if not head.labels:
        raise ExportError("--preprocess auto measures accuracy: the model needs a "
                          "classification output")
    table: dict[str, float] = {}
    candidates: dict[str, list[InputSpec]] = {}
    for preset in PRESET_NAMES:
        try:
            spec = apply_preprocess(inputs[images[0]], preset, **changes)
        except Exception:  # noqa: BLE001 - a preset this input cannot take is not a candidate
            continue
        trial = [spec if i == images[0] else s for i, s in enumerate(inputs)]
        feed, _ = load_samples(data, trial, samples, seed)
        try:
            outputs = session.run([head.name], feed)[0]
        except Exception:  # noqa: BLE001 - a size the graph does not take: not a candidate
            continue
        accuracy = labelled_accuracy(outputs, data, head)
        if accuracy is not None:
            table[preset] = accuracy
            candidates[preset] = trial
    if not table:
        raise ExportError(f"--preprocess auto: no preset runs on {os.fspath(data)}")
    best = max(table.values())
    winners = [p for p, acc in table.items() if acc == best]
    chosen = suggested if suggested in winners else winners[0]
    return candidates[chosen], chosen, table


def format_table(table: dict[str, float], chosen: str, count: int) -> str:
    """The per-preset accuracy table ``dlinfer export --preprocess auto`` prints."""
    lines = [f"top-1 accuracy per preset on {count} labelled images:"]
    for preset, accuracy in sorted(table.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {preset:<12} {accuracy:7.2%}" + ("  <- kept" if preset == chosen
                                                          else ""))
    note = sample_count_note(count)
    if note:
        lines.append(f"warning: {note}")
    return "\n".join(lines)
