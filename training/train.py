"""Train a zoo model, export it to ONNX, check parity, write a report."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

import dlinfer
from dlinfer.images import normalize_pixels

from . import data as datasets
from . import export, parity, zoo
from ._tf import keras

__all__ = ["TrainResult", "train"]

SEED = 0


@dataclass
class TrainResult:
    keras_model: Any
    keras_path: str
    onnx_path: str
    report_path: str
    report: dict[str, Any]
    split: datasets.Split
    x_test: np.ndarray  # the float model input of the test set


def _input_spec_for(entry: zoo.ZooEntry) -> dlinfer.InputSpec:
    """The preprocessing spec the model is trained with, and exported with."""
    return dlinfer.InputSpec(name="images", shape=(None, 28, 28, 1), color="GRAY", scale=1 / 255)


def _to_input(pixels: np.ndarray, spec: dlinfer.InputSpec) -> np.ndarray:
    # Training uses dlinfer's own native kernel, so the arithmetic a deployed model
    # sees is bit-for-bit the arithmetic it was trained and checked with.
    return normalize_pixels(pixels.reshape(len(pixels), 28, 28, 1), spec)


def train(
    name: str,
    *,
    epochs: int | None = None,
    data: str | None = None,
    out: str = "artifacts",
    batch_size: int | None = None,
    verbose: int = 2,
    log=print,
) -> TrainResult:
    entry = zoo.get(name)
    data = data or entry.default_data
    if data not in entry.data_choices:
        raise SystemExit(f"{name}: --data must be one of {', '.join(entry.data_choices)}")
    epochs = entry.epochs if epochs is None else epochs
    batch_size = batch_size or entry.batch_size
    os.makedirs(out, exist_ok=True)

    split = datasets.load_mnist(data)
    log(f"[{name}] data: {split.describe()}")
    spec = _input_spec_for(entry)
    x_train, x_test = _to_input(split.x_train, spec), _to_input(split.x_test, spec)
    n_classes = len(entry.labels)
    y_train = keras.utils.to_categorical(split.y_train, n_classes)

    keras.utils.set_random_seed(SEED)
    model = entry.build()
    params = int(model.count_params())
    if params != entry.params:
        raise AssertionError(f"{name}: built {params:,} parameters, the workshop has {entry.params:,}")
    model.compile(optimizer=entry.optimizer, loss=entry.loss, metrics=["accuracy"])
    log(f"[{name}] training {params:,} parameters for {epochs} epochs, batch {batch_size}")
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose,
              **entry.fit_options)
    train_seconds = time.perf_counter() - started

    keras_path = os.path.join(out, f"{name}.keras")
    onnx_path = os.path.join(out, f"{name}.onnx")
    report_path = os.path.join(out, f"{name}.report.json")
    model.save(keras_path)

    export_kwargs = dict(
        name=name, task="classification", labels=entry.labels, color=spec.color,
        scale=spec.scale, mean=spec.mean, std=spec.std,
    )
    proto = export.to_onnx(model, onnx_path, **export_kwargs)
    onnx_model = dlinfer.Model(onnx_path)
    figures = parity.compare(model, onnx_model, x_test, split.y_test)
    figures["batch_max_abs_diff"] = {
        str(b): d for b, d in parity.compare_batches(model, onnx_model, x_test).items()
    }
    # Record the measured parity inside the model itself, then save it again: the
    # metadata does not touch the graph, so the figures describe the saved file.
    export.set_spec(proto, dataclasses.replace(onnx_model.spec, parity=figures))
    onnx.save(proto, onnx_path)

    report = {
        "model": name,
        "data": data,
        "data_source": split.source,
        "epochs": epochs,
        "batch_size": batch_size,
        "params": params,
        "train_seconds": round(train_seconds, 2),
        "keras_test_accuracy": figures["keras_accuracy"],
        "onnx_test_accuracy": figures["onnx_accuracy"],
        "max_abs_diff": figures["max_abs_diff"],
        "argmax_agreement": figures["argmax_agreement"],
        "batch_max_abs_diff": figures["batch_max_abs_diff"],
        "test_samples": figures["samples"],
        "versions": export.versions(),
        "files": {"keras": keras_path, "onnx": onnx_path},
    }
    with open(report_path, "w") as f:
        json.dump(report, f, indent=2)
    log(
        f"[{name}] test accuracy: Keras {report['keras_test_accuracy']:.4f}, "
        f"ONNX {report['onnx_test_accuracy']:.4f}; max abs diff {report['max_abs_diff']:.2e}; "
        f"argmax agreement {report['argmax_agreement']:.4f} ({train_seconds:.1f} s training)"
    )
    return TrainResult(model, keras_path, onnx_path, report_path, report, split, x_test)
