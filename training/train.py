"""Train a zoo model, export it to ONNX, check parity, write a report.

One entry point, :func:`train`, for every model in the zoo.  What differs between
models lives in their :class:`~training.zoo.ZooEntry` (data loader, spec, metric)
and in one ``_fit_<kind>`` function per kind of training below; saving, export,
parity and the report are shared.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dlinfer
import numpy as np
import onnx
from dlinfer import export

from . import data as datasets
from . import parity, zoo
from ._tf import keras, tf
from .gan_eval import EVAL_SAMPLES, EVAL_SEED, evaluate_dcgan, evaluate_parabola, latents, normal

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
    x_test: np.ndarray  # the model input of the test set (floats, token ids or latents)
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the GAN's discriminator


@dataclass
class _Fitted:
    """What a ``_fit_<kind>`` function hands back to the shared export/report code."""

    model: Any
    split: datasets.Split
    x_test: np.ndarray
    y_test: np.ndarray | None
    spec: dict[str, Any]  # to_onnx keyword arguments
    report: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    evaluate: Callable[[Any, dlinfer.Model], dict[str, Any]] | None = None
    # Model inputs from the training split for int8 calibration (None: not an image model).
    x_calibrate: np.ndarray | None = None


# int8 calibration takes the first this many training images (`dlinfer optimize`'s default).
_CALIBRATION_SAMPLES = 512


def _input_spec(spec: dict[str, Any],
                shape: tuple[int | None, ...] = (None, 28, 28, 1)) -> dlinfer.InputSpec:
    """The image input spec the exporter will write for the to_onnx arguments ``spec``."""
    return dlinfer.InputSpec(
        name=spec.get("input_name", "images"), shape=shape,
        color=spec.get("color", "GRAY"), scale=spec.get("scale", 1 / 255),
        mean=tuple(spec.get("mean", (0.0,))), std=tuple(spec.get("std", (1.0,))),
    )


def model_input(images: np.ndarray, spec: dlinfer.InputSpec) -> np.ndarray:
    """What the model trains on: the images through the exact path `Classifier` runs.

    uint8 pixels take the native pass, float pixels (``pixels * scale``) the float
    path; both are :meth:`dlinfer.PreprocessSpec.model_input`, so a deployed model
    sees bit-for-bit the numbers it was trained and checked with.
    """
    return dlinfer.PreprocessSpec.from_model(spec).model_input(images)


def _to_input(pixels: np.ndarray, spec: dlinfer.InputSpec) -> np.ndarray:
    return model_input(pixels.reshape(len(pixels), 28, 28, 1), spec)


def _optimize(entry: zoo.ZooEntry, fitted: _Fitted, onnx_model: dlinfer.Model, mode: str,
              max_drop: float) -> Any:
    """``dlinfer optimize`` on the exported file, evaluated on the held-out split.

    int8 calibrates on the first 512 training images, in the form the model trained on.
    Raises OptimizeError (nothing written) when the drop exceeds ``max_drop`` points.
    """
    from dlinfer.export.onnx_file import write_atomic
    from dlinfer.optimize import optimize

    name = onnx_model.inputs[0].name
    calibrate = None
    if mode == "int8":
        if fitted.x_calibrate is None:
            raise dlinfer.OptimizeError(
                f"{entry.name}: the training hook calibrates int8 on the image models' "
                "training images; run `dlinfer optimize` with --calibrate for this one")
        calibrate = fitted.x_calibrate
    evaluation: dict[str, np.ndarray] = {name: fitted.x_test}
    if fitted.y_test is not None and entry.spec.get("task", "classification") == \
            "classification":
        evaluation["labels"] = np.asarray(fitted.y_test)
    stem = onnx_model.path[: -len(".onnx")]
    # The data the gate used, kept beside the model: `dlinfer optimize --eval
    # NAME.heldout.npz [--calibrate NAME.calibration.npy]` replays it without TensorFlow.
    write_atomic(f"{stem}.heldout.npz", lambda tmp: np.savez(tmp, **evaluation))
    if calibrate is not None:
        write_atomic(f"{stem}.calibration.npy", lambda tmp: np.save(tmp, calibrate))
    return optimize(onnx_model.path, f"{stem}.{mode}.onnx", mode, calibrate=calibrate,
                    eval=evaluation, max_drop=max_drop)


def _checked_build(entry: zoo.ZooEntry, **kwargs: Any) -> Any:
    model = entry.build(**kwargs)
    if not kwargs and model.count_params() != entry.params:
        raise AssertionError(
            f"{entry.name}: built {model.count_params():,} parameters, "
            f"the workshop has {entry.params:,}"
        )
    return model


def _fit_pixels(entry: zoo.ZooEntry, data: str, o: dict[str, Any]) -> _Fitted:
    split = entry.load(data)
    o["log"](f"[{entry.name}] data: {split.describe()}")
    spec = _input_spec(entry.spec)
    x_train, x_test = _to_input(split.x_train, spec), _to_input(split.x_test, spec)
    y_train = keras.utils.to_categorical(split.y_train, len(entry.labels))
    model = _checked_build(entry)
    trainer = model
    if entry.train_augment is not None:
        # The model shares its layers with the trainer, so it learns while only the
        # trainer holds the random layers: nothing random is saved or exported.
        trainer = keras.Sequential([keras.Input(model.input_shape[1:]),
                                    *entry.train_augment(), model], name=f"{entry.name}_train")
    trainer.compile(optimizer=_optimizer(entry, len(x_train), o), loss=entry.loss,
                    metrics=["accuracy"])
    _log_start(entry, model, o)
    trainer.fit(x_train, y_train, epochs=o["epochs"], batch_size=o["batch_size"],
                verbose=o["verbose"], **entry.fit_options)
    return _Fitted(model, split, x_test, split.y_test, dict(entry.spec),
                   x_calibrate=x_train[:_CALIBRATION_SAMPLES])


def _optimizer(entry: zoo.ZooEntry, n_train: int, o: dict[str, Any]) -> Any:
    if entry.cosine_lr is None:
        return entry.optimizer
    fraction = 1.0 - entry.fit_options.get("validation_split", 0.0)
    steps = max(1, o["epochs"] * int(np.ceil(n_train * fraction / o["batch_size"])))
    schedule = keras.optimizers.schedules.CosineDecay(entry.cosine_lr, steps)
    return keras.optimizers.get({"class_name": entry.optimizer,
                                 "config": {"learning_rate": schedule}})


def _folder(entry: zoo.ZooEntry, data: str, o: dict[str, Any]) -> str:
    if data != "fashion-images":
        return data
    root = os.path.join(o["out"], f"fashion-images-{o['image_size']}")
    if not os.path.isdir(root):
        o["log"](f"[{entry.name}] writing Fashion-MNIST sneaker/ankle-boot JPEGs to {root}")
        datasets.make_images(root, per_class=o["samples"] or 500, size=o["image_size"])
    return root


def _materialize(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in ds], strict=True)
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def _fit_folder(entry: zoo.ZooEntry, data: str, o: dict[str, Any]) -> _Fitted:
    size = o["image_size"]
    root = _folder(entry, data, o)
    train_ds, test_ds, classes = datasets.load_image_folder(root, (size, size), o["batch_size"])
    spec = dict(entry.spec, labels=classes)
    input_spec = _input_spec(spec, (None, size, size, 3))
    binary = len(classes) == 2 and entry.binary_head
    if binary:
        spec.update(task="binary_classification", threshold=0.5)
    else:
        spec.setdefault("task", "classification")

    def normalize(x: np.ndarray) -> np.ndarray:
        # The loader yields float pixels; they take Classifier's float path.
        return model_input(x * np.float32(input_spec.scale), input_spec)

    def prepare(x: Any, y: Any) -> tuple[Any, Any]:
        x = tf.ensure_shape(tf.numpy_function(normalize, [x], tf.float32),
                            (None, size, size, 3))
        return (x, tf.cast(tf.reshape(y, (-1, 1)), tf.float32)) if binary else (x, y)

    train_ds = train_ds.map(prepare).prefetch(2)
    pixels_test, y_test = _materialize(test_ds)
    # int8 calibration inputs: training images, normalized by `prepare`.
    x_calibrate, _ = _materialize(train_ds.unbatch().take(_CALIBRATION_SAMPLES).batch(64))
    x_test = normalize(pixels_test)
    kwargs: dict[str, Any] = {"n_classes": len(classes), "image_size": size}
    if entry.pretrained:
        kwargs["weights"] = o["weights"]
    model = entry.build(**kwargs)
    loss = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(1e-4 if binary else 1e-3), loss=loss,
                  metrics=["accuracy"])
    _log_start(entry, model, o)
    o["log"](f"[{entry.name}] data: {len(classes)} classes {classes} from {root}")
    # The folder dataset reshuffles itself each epoch; shuffle=False only silences
    # Keras's warning that it cannot shuffle a tf.data.Dataset.
    model.fit(train_ds, epochs=o["epochs"], verbose=o["verbose"], shuffle=False)
    report: dict[str, Any] = {"classes": list(classes), "image_size": size}
    if entry.pretrained:
        report["weights"] = o["weights"] or "none"
        if o["fine_tune_epochs"]:
            # Stage 2: unfreeze block5 only, with a small learning rate so the
            # pretrained filters are adjusted rather than destroyed.
            base = model.layers[0]
            base.trainable = True
            for layer in base.layers:
                layer.trainable = layer.name.startswith("block5")
            model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss, metrics=["accuracy"])
            o["log"](f"[{entry.name}] stage 2: fine-tuning block5 for "
                     f"{o['fine_tune_epochs']} epochs")
            model.fit(train_ds, epochs=o["fine_tune_epochs"], verbose=o["verbose"], shuffle=False)
        report["fine_tune_epochs"] = o["fine_tune_epochs"]
    split = datasets.Split(np.empty((0,)), np.empty((0,)), pixels_test, y_test,
                           f"image folder {root}")
    return _Fitted(model, split, x_test, y_test, spec, report, x_calibrate=x_calibrate)


def _fit_series(entry: zoo.ZooEntry, data: str, o: dict[str, Any]) -> _Fitted:
    split = entry.load(data, o["n_steps"])
    o["log"](f"[{entry.name}] data: {split.describe()}")
    mean, std = float(split.y_train.mean()), float(split.y_train.std())
    model = entry.build(n_steps=o["n_steps"], mean=mean, std=std)
    shape = (-1, *model.inputs[0].shape[1:])
    x_train, x_test = split.x_train.reshape(shape), split.x_test.reshape(shape)
    model.compile(optimizer=entry.optimizer, loss=entry.loss)
    _log_start(entry, model, o)
    model.fit(x_train, split.y_train, epochs=o["epochs"], batch_size=o["batch_size"],
              verbose=o["verbose"], shuffle=True)
    persistence = float(np.sqrt(np.mean((split.x_test[:, -1] - split.y_test) ** 2)))
    return _Fitted(model, split, x_test, split.y_test, dict(entry.spec, extra={"series": data}),
                   {"persistence_rmse": persistence, "n_steps": o["n_steps"]})


def _fit_tokens(entry: zoo.ZooEntry, data: str, o: dict[str, Any]) -> _Fitted:
    split = entry.load(data)
    o["log"](f"[{entry.name}] data: {split.describe()}")
    model = _checked_build(entry) if split.x_train.shape[1] == datasets.IMDB_MAXLEN else (
        entry.build(maxlen=split.x_train.shape[1]))
    model.compile(optimizer=entry.optimizer, loss=entry.loss, metrics=["accuracy"])
    _log_start(entry, model, o)
    model.fit(split.x_train, split.y_train.astype(np.float32), epochs=o["epochs"],
              batch_size=o["batch_size"], verbose=o["verbose"])
    return _Fitted(model, split, split.x_test, split.y_test, dict(entry.spec))


def _gan_step(generator: Any, discriminator: Any, lr: float) -> Callable[..., Any]:
    """One compiled GAN step: the discriminator on real+fake, then the generator."""
    d_opt = keras.optimizers.Adam(lr, beta_1=0.5)
    g_opt = keras.optimizers.Adam(lr, beta_1=0.5)
    bce = keras.losses.BinaryCrossentropy()

    @tf.function
    def step(real: Any, z_d: Any, z_g: Any) -> tuple[Any, Any]:
        n = tf.shape(real)[0]
        with tf.GradientTape() as tape:
            fake = generator(z_d, training=True)
            d_loss = (bce(tf.ones((n, 1)), discriminator(real, training=True))
                      + bce(tf.zeros((n, 1)), discriminator(fake, training=True)))
        grads = tape.gradient(d_loss, discriminator.trainable_variables)
        d_opt.apply_gradients(zip(grads, discriminator.trainable_variables, strict=True))
        with tf.GradientTape() as tape:
            fooled = discriminator(generator(z_g, training=True), training=True)
            g_loss = bce(tf.ones((tf.shape(z_g)[0], 1)), fooled)
        grads = tape.gradient(g_loss, generator.trainable_variables)
        g_opt.apply_gradients(zip(grads, generator.trainable_variables, strict=True))
        return d_loss, g_loss

    return step


def _fit_gan(entry: zoo.ZooEntry, data: str, o: dict[str, Any]) -> _Fitted:
    generator = _checked_build(entry)
    discriminator = entry.build_discriminator()
    latent = int(generator.inputs[0].shape[1])
    rng = np.random.default_rng(SEED)
    half = o["batch_size"] // 2
    _log_start(entry, generator, o)
    if entry.load is None:  # points generated on the fly
        # Brownlee's recipe: Adam, 64 real + 64 fake points per step; "epochs" are steps.
        step = _gan_step(generator, discriminator, lr=1e-3)
        split = datasets.Split(np.empty((0, 2)), np.empty((0,)),
                               datasets.parabola_points(EVAL_SAMPLES, rng), np.empty((0,)),
                               "points (x, x^2), x ~ U[-0.5, 0.5], generated")
        for i in range(o["epochs"]):
            real = datasets.parabola_points(half, rng)
            d_loss, g_loss = step(real, normal(rng, half, latent), normal(rng, 2 * half, latent))
            if o["verbose"] and (i + 1) % 1000 == 0:
                o["log"](f"[{entry.name}] step {i + 1}: d_loss {float(d_loss):.3f} "
                         f"g_loss {float(g_loss):.3f}")
        evaluate = evaluate_parabola
        report: dict[str, Any] = {"steps": o["epochs"]}
    else:
        split = entry.load(data)
        o["log"](f"[{entry.name}] data: {split.describe()}")
        images = (split.x_train.astype(np.float32) / 255.0)[..., None]
        step = _gan_step(generator, discriminator, lr=2e-4)
        steps_per_epoch = len(images) // half
        for epoch in range(o["epochs"]):
            order = rng.permutation(len(images))
            for j in range(steps_per_epoch):
                real = images[order[j * half:(j + 1) * half]]
                d_loss, g_loss = step(real, normal(rng, half, latent),
                                      normal(rng, 2 * half, latent))
            o["log"](f"[{entry.name}] epoch {epoch + 1}: d_loss {float(d_loss):.3f} "
                     f"g_loss {float(g_loss):.3f}")
        real_test = (split.x_test.astype(np.float32) / 255.0)[..., None]

        def evaluate(keras_model: Any, onnx_model: dlinfer.Model) -> dict[str, Any]:
            return evaluate_dcgan(keras_model, onnx_model, discriminator, real_test)

        report = {"epochs_over_images": o["epochs"], "steps": o["epochs"] * steps_per_epoch}
    # As many fakes as real test digits (1,000 with the default data) for the DCGAN.
    n_eval = EVAL_SAMPLES if entry.load is None else min(EVAL_SAMPLES, len(split.x_test))
    x_test = latents(n_eval, latent, EVAL_SEED)
    return _Fitted(generator, split, x_test, None, dict(entry.spec), report,
                   {"discriminator": discriminator}, evaluate)


_FIT = {"pixels": _fit_pixels, "folder": _fit_folder, "series": _fit_series,
        "tokens": _fit_tokens, "gan": _fit_gan}


def _log_start(entry: zoo.ZooEntry, model: Any, o: dict[str, Any]) -> None:
    o["log"](f"[{entry.name}] training {model.count_params():,} parameters for {o['epochs']} "
             f"{'steps' if entry.epochs_are_steps else 'epochs'}, batch {o['batch_size']}")


def train(
    name: str,
    *,
    epochs: int | None = None,
    data: str | None = None,
    out: str = "artifacts",
    batch_size: int | None = None,
    verbose: int = 2,
    log: Callable[..., Any] = print,
    weights: str | None = None,
    image_size: int = 150,
    samples: int | None = None,
    n_steps: int = 3,
    fine_tune_epochs: int = 1,
    optimize: str | None = None,
    max_drop: float = 0.5,
) -> TrainResult:
    """Train zoo model ``name`` on its data, export it to ONNX, check parity, report.

    Args:
        epochs: training epochs (steps for ``gan_1d``); default: the entry's.
        data: a ``--data`` choice of the entry (``list`` shows them) or, for the image
            folder models, a folder ``root/<class>/*.jpg``; default: offline data.
        out: folder for ``NAME.keras``, ``NAME.onnx`` and ``NAME.report.json``.
        weights: VGG16 base weights: None/``"none"``, ``"imagenet"`` or a file.
        image_size: input size of the folder models; ``samples`` images per class when
            the default folder is generated.
        n_steps: window length of the time-series models.
        fine_tune_epochs: VGG16's second stage (block5 unfrozen); 0 skips it.
        optimize: also write ``NAME.MODE.onnx`` with ``dlinfer optimize`` (``int8``,
            ``fp16`` or ``graph``), gated on the held-out split (``max_drop`` points);
            int8 calibrates on training images.  The gate's report joins the report.
    """
    entry = zoo.get(name)
    data = data or entry.default_data
    if data not in entry.data_choices and entry.kind != "folder":
        raise SystemExit(f"{name}: --data must be one of {', '.join(entry.data_choices)}")
    options = {
        "epochs": entry.epochs if epochs is None else epochs,
        "batch_size": batch_size or entry.batch_size,
        "verbose": verbose, "log": log, "out": out, "weights": weights,
        "image_size": image_size, "samples": samples, "n_steps": n_steps,
        "fine_tune_epochs": fine_tune_epochs,
    }
    zoo.check_request(entry, epochs=options["epochs"], image_size=image_size, weights=weights)
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(SEED)
    started = time.perf_counter()
    fitted = _FIT[entry.kind](entry, data, options)
    train_seconds = time.perf_counter() - started
    model = fitted.model

    keras_path = os.path.join(out, f"{name}.keras")
    onnx_path = os.path.join(out, f"{name}.onnx")
    report_path = os.path.join(out, f"{name}.report.json")
    model.save(keras_path)
    spec = fitted.spec
    proto = export.to_onnx(model, onnx_path, name=name, **spec)
    onnx_model = dlinfer.Model(onnx_path)
    task = spec.get("task", "classification")
    figures = parity.compare(model, onnx_model, fitted.x_test, fitted.y_test, task=task,
                             threshold=spec.get("threshold") or 0.5)
    if fitted.evaluate is not None:
        figures.update(fitted.evaluate(model, onnx_model))
    figures["batch_max_abs_diff"] = {
        str(b): d for b, d in parity.compare_batches(model, onnx_model, fitted.x_test).items()
    }
    # Record the measured parity inside the model itself, then save it again: the
    # metadata does not touch the graph, so the figures describe the saved file.
    export.set_spec(proto, dataclasses.replace(onnx_model.spec, parity=figures))
    onnx.save(proto, onnx_path)

    metric = entry.metric
    report = {
        "model": name,
        "data": data,
        "data_source": fitted.split.source,
        "epochs": options["epochs"],
        "batch_size": options["batch_size"],
        "params": int(model.count_params()),
        "train_seconds": round(train_seconds, 2),
        "metric": metric,
        "keras_test_metric": figures.get(f"keras_{metric}"),
        "onnx_test_metric": figures.get(f"onnx_{metric}"),
        **fitted.report,
        **{k: v for k, v in figures.items() if k != "batch_max_abs_diff"},
        "batch_max_abs_diff": figures["batch_max_abs_diff"],
        "test_samples": figures["samples"],
        "versions": export.versions(),
        "files": {"keras": keras_path, "onnx": onnx_path},
    }
    if "keras_accuracy" in figures:
        report["keras_test_accuracy"] = figures["keras_accuracy"]
        report["onnx_test_accuracy"] = figures["onnx_accuracy"]
    refused = None
    if optimize is not None:
        try:
            gated = _optimize(entry, fitted, onnx_model, optimize, max_drop)
        except dlinfer.OptimizeError as exc:  # the float32 model stands; say why, then raise
            refused = exc
            report["optimize"] = {"mode": optimize, "refused": str(exc)}
        else:
            log(f"[{name}] {optimize}: " + gated.format().replace("\n", f"\n[{name}] "))
            report["optimize"] = gated.to_dict()
            report["files"]["optimized"] = gated.out
    with open(report_path, "w") as f:
        json.dump(report, f, indent=2)
    if refused is not None:
        raise refused
    log(f"[{name}] test {metric}: Keras {report['keras_test_metric']:.4f}, ONNX "
        f"{report['onnx_test_metric']:.4f}; max abs diff {report['max_abs_diff']:.2e} "
        f"({train_seconds:.1f} s training)"
        + (f"; persistence RMSE {report['persistence_rmse']:.4f}"
           if "persistence_rmse" in report else ""))
    return TrainResult(model, keras_path, onnx_path, report_path, report, fitted.split,
                       fitted.x_test, fitted.extras)
