"""Export knows how a Keras model scales its pixels, says what it assumed, and measures
accuracy on labelled folders (issue 25).

- For a model built on a keras.applications base, `dlinfer export` with no
  preprocessing flag writes the family's preprocess_input convention: Classifier's
  probabilities on real photos equal Keras's ``model.predict(preprocess_input(photos))``.
  preprocess_input is imported here, on the test side only.
- A model that says nothing gets the assumption printed, with the flag; outputs that do
  not depend on the inputs get a warning (an error with --strict).
- A labelled folder (one sub-folder per class) works as --data (accuracy in the report),
  --calibrate and --eval (the gate's accuracy against its labels, with the sample count).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from dlinfer.errors import ExportError, InputError
from dlinfer.tools.cli import main
from optional import need
from reference import assert_close

# Keras runs the model in float32 on the normalized photos, onnxruntime the same graph
# in float32 on the same values computed by dlinfer's preprocessing (a float32 affine
# map instead of preprocess_input's own order of operations): 1e-4 relative covers the
# rounding of ~100 float32 layers; probabilities of 3 classes are far from 0.
RTOL = 1e-4

# family: (keras.applications class, its module, the input size used: the smallest each
# takes without include_top), keras.applications' own minimums: 32, InceptionV3 75.
FAMILIES = {
    "VGG16": ("VGG16", "vgg16", 32),
    "MobileNetV2": ("MobileNetV2", "mobilenet_v2", 32),
    "ResNet50": ("ResNet50", "resnet", 32),
    "InceptionV3": ("InceptionV3", "inception_v3", 75),
    "DenseNet121": ("DenseNet121", "densenet", 32),
    "EfficientNetB0": ("EfficientNetB0", "efficientnet", 32),
}
# The default run keeps one family (~15 s of export); the others are marked slow.
DEFAULT_RUN = ("MobileNetV2",)


def _resized(photos: dict[str, np.ndarray], size: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR))
                     for p in photos.values()])


def _crops(photos: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` random crops of the photos, flipped at random and resized back: enough
    varied images that batch-norm statistics taken from them are well conditioned (five
    images leave near-zero variances at the 1x1 end of a 32x32 network)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = photos.shape[1]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(size // 2, size + 1))
        y, x = rng.integers(0, size - side + 1, 2)
        crop = photo[y:y + side, x:x + side][:, ::int(rng.choice([-1, 1]))]
        out.append(np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size))))
    return np.stack(out)


def _transfer_model(family: str, photos: np.ndarray, seed: int):
    """``base(weights=None)`` nested in a functional model with a random 3-class head.

    A fresh base has batch-norm statistics (mean 0, variance 1) that leave deep
    activations saturated: every photo would get the same answer, and the comparison
    would prove nothing.  One training-mode pass with momentum 0 sets each batch-norm's
    statistics to those of crops of the photos, so the outputs depend on the inputs.
    The head's random weights are scaled so that its logits spread by about 0.25 over
    the photos: the probabilities differ between photos, while the float32 noise of a
    deep random network (ONNX against Keras on the very same input: up to 3e-4 relative
    at a spread of 1 on ResNet50 and InceptionV3) stays below the 1e-4 compared.
    """
    import keras

    keras.utils.set_random_seed(seed)
    cls, module, size = FAMILIES[family]
    apps = keras.applications
    base = getattr(apps, cls)(weights=None, include_top=False, input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()
    head = keras.layers.Dense(3)
    model = keras.Model(inputs, keras.layers.Softmax()(head(pooled(base(inputs)))))
    for layer in base.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.0
    preprocess = getattr(apps, module).preprocess_input
    normalized = preprocess(photos.astype(np.float32))
    model(preprocess(_crops(photos, 64, seed).astype(np.float32)), training=True)
    features = np.asarray(pooled(base(normalized, training=False)), dtype=np.float64)
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((features.shape[1], 3)) / np.sqrt(features.shape[1])
    kernel *= 0.25 / ((features @ kernel).std(axis=0) + 1e-6)
    head.set_weights([kernel.astype(np.float32),
                      (-features.mean(axis=0) @ kernel).astype(np.float32)])
    return model, preprocess


def _check_family(family: str, photos_dict: dict, tmp_path) -> None:
    need("tensorflow", "tf2onnx")
    from dlinfer import Classifier

    photos = _resized(photos_dict, FAMILIES[family][2])
    model, preprocess = _transfer_model(family, photos, seed=25)
    model.save(tmp_path / "model.keras")
    out = str(tmp_path / "m.onnx")
    # The self-check runs on the photos (uint8, normalized per the spec it writes): random
    # pixels are far from the photos whose statistics the batch norms hold, and a random
    # EfficientNet amplifies float32 noise on them past the check's tolerance.
    np.save(tmp_path / "photos.npy", photos)
    assert main(["export", str(tmp_path / "model.keras"), "--out", out,
                 "--labels", "a,b,c", "--data", str(tmp_path / "photos.npy")]) == 0
    want = np.asarray(model.predict(preprocess(photos.astype(np.float32)), verbose=0))
    assert np.ptp(want, axis=0).max() > 1e-3, "the outputs must depend on the photos"
    got = Classifier(out).predict_proba(photos)
    assert_close(got, want, rtol=RTOL, context=f"{family}: Classifier vs Keras")


@pytest.mark.parametrize("family", DEFAULT_RUN)
def test_keras_applications_base_gets_its_convention(family, photos, tmp_path):
    _check_family(family, photos, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in DEFAULT_RUN])
def test_keras_applications_base_gets_its_convention_slow(family, photos, tmp_path):
    _check_family(family, photos, tmp_path)


def _plain_model(size: int = 16, classes: int = 3):
    import keras

    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((size, size, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(classes),
        keras.layers.Softmax()])


def test_detection_without_export():
    """Which convention each kind of model front gets, without converting anything."""
    need("tensorflow")
    import keras
    from dlinfer.export.pixels import detect_convention

    L = keras.layers
    lam = keras.Sequential([keras.Input((8, 8, 3)), L.Lambda(lambda t: t / 127.5 - 1),
                            L.Conv2D(2, 3)])
    assert detect_convention(lam, 3).preset == "raw"
    assert "[-1, 1]" in detect_convention(lam, 3).reason
    inputs = keras.Input((32, 32, 3))
    x = keras.applications.mobilenet_v2.preprocess_input(L.RandomFlip()(inputs))
    inside = keras.Model(inputs, L.Conv2D(2, 3)(x))
    assert detect_convention(inside, 3).preset == "raw"
    eff = keras.applications.EfficientNetB0(weights=None, include_top=False,
                                            input_shape=(32, 32, 3))
    nested = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(eff(inputs))))
    assert detect_convention(nested, 3).preset == "raw"
    assert detect_convention(_plain_model(), 3).assumed


def test_assumption_is_announced_with_the_flag(tmp_path, caplog, capsys):
    need("tensorflow", "tf2onnx")
    _plain_model().save(tmp_path / "plain.keras")
    out = str(tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING, logger="dlinfer"):
        assert main(["export", str(tmp_path / "plain.keras"), "--out", out,
                     "--labels", "a,b,c"]) == 0
    assert "assumed preset 'unit' (pixels / 255" in caplog.text
    assert "--preprocess keras-tf" in caplog.text
    assert "preset unit (assumed" in capsys.readouterr().out
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dlinfer"):
        assert main(["export", str(tmp_path / "plain.keras"), "--out", out,
                     "--labels", "a,b,c", "--preprocess", "keras-tf"]) == 0
    assert "assumed" not in caplog.text
    spec = _spec(out)
    assert spec["inputs"][0]["scale"] == pytest.approx(1 / 127.5)
    assert spec["extra"]["pixels"]["images"] == {"preset": "keras-tf", "how": "given"}


def _spec(path: str) -> dict:
    import onnx
    from dlinfer.spec import METADATA_KEY

    proto = onnx.load(path)
    return json.loads(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY))


def test_input_independent_outputs_warn_and_strict_refuses(tmp_path, caplog, capsys):
    """A fresh MobileNetV2(weights=None, classes=3) answers exactly 1/3 for everything."""
    need("tensorflow", "tf2onnx")
    import keras
    from dlinfer.export import to_onnx

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, classes=3, input_shape=(32, 32, 3),
                                           alpha=0.35)
    with caplog.at_level(logging.WARNING, logger="dlinfer"):
        proto = to_onnx(model, None, labels=("a", "b", "c"))
    assert "do not depend on the inputs" in caplog.text
    warnings = json.loads(next(p.value for p in proto.metadata_props
                               if p.key == "dlinfer.spec"))["parity"]["warnings"]
    assert "do not depend on the inputs" in warnings[0]
    # --strict refuses (a small model with zero weights: the same 1/3, cheaper to export)
    zeros = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, kernel_initializer="zeros"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3), keras.layers.Softmax()])
    zeros.save(tmp_path / "zeros.keras")
    out = tmp_path / "m.onnx"
    args = ["export", str(tmp_path / "zeros.keras"), "--out", str(out), "--preprocess", "unit"]
    assert main([*args, "--strict"]) == 1
    assert "do not depend on the inputs" in capsys.readouterr().err
    assert not os.path.exists(out)
    with pytest.raises(ExportError, match="do not depend on the inputs"):
        to_onnx(zeros, None, preprocess="unit", strict=True)


def test_mean_and_std_take_one_number(tmp_path):
    """to_onnx(mean=0.5, std=0.5): one value for every channel, after 'unit' (x / 255)."""
    need("tensorflow", "tf2onnx")
    from dlinfer.export import to_onnx

    to_onnx(_plain_model(), str(tmp_path / "m.onnx"), mean=0.5, std=0.5)
    spec = _spec(str(tmp_path / "m.onnx"))["inputs"][0]
    assert (spec["scale"], spec["mean"], spec["std"]) == (pytest.approx(1 / 255), [0.5], [0.5])


# ---- labelled folders -------------------------------------------------------------------


def _labelled_folder(root, photos: dict[str, np.ndarray], classes=("a", "b", "c"),
                     per_class: int = 4) -> str:
    """Class folders of photo crops, some in a nested folder (read recursively)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    images = list(photos.values())
    for c, name in enumerate(classes):
        for i in range(per_class):
            photo = images[(c + i) % len(images)]
            y, x = rng.integers(0, 100, 2)
            folder = root / name / ("nested" if i % 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo[y:y + 120, x:x + 120]).save(folder / f"{i}.png")
    return str(root)


def test_labelled_folder_reader(tmp_path, photos):
    from dlinfer.verification.labelled import folder_files, folder_labels, is_labelled_folder

    root = _labelled_folder(tmp_path / "data", photos, per_class=3)
    assert is_labelled_folder(root)
    files = folder_files(root, 5)
    # a class at a time in turn: the first samples cover every class
    assert [os.path.relpath(f, root).split(os.sep)[0] for f in files] == list("abcab")
    assert folder_labels(root, 5, ("c", "B", "a")).tolist() == [2, 1, 0, 2, 1]
    with pytest.raises(InputError, match="class folder 'b' matches none"):
        folder_labels(root, 5, ("a", "x", "c"))


def test_export_reports_accuracy_and_auto_keeps_the_best_preset(tmp_path, photos, capsys):
    need("tensorflow", "tf2onnx")
    _plain_model().save(tmp_path / "plain.keras")
    data = _labelled_folder(tmp_path / "data", photos)
    out = str(tmp_path / "m.onnx")
    args = ["export", str(tmp_path / "plain.keras"), "--out", out, "--labels", "a,b,c",
            "--data", data]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "top-1 accuracy" in text and "on 12 labelled images" in text
    parity = _spec(out)["parity"]
    assert parity["samples"] == 12 and 0 <= parity["accuracy"] <= 1
    assert any("only 12 samples" in w for w in parity["warnings"])
    assert main([*args, "--preprocess", "auto"]) == 0
    text = capsys.readouterr().out
    assert "top-1 accuracy per preset on 12 labelled images" in text
    pixels = _spec(out)["extra"]["pixels"]["images"]
    table = pixels["accuracy"]
    assert set(table) >= {"keras-tf", "keras-caffe", "keras-torch", "unit", "raw"}
    assert table[pixels["preset"]] == max(table.values())
    assert _spec(out)["parity"]["accuracy"] == pytest.approx(max(table.values()))


def test_optimize_gate_measures_accuracy_against_folder_labels(tmp_path, photos, capsys):
    """--calibrate and --eval take labelled folders; the gate scores against the labels."""
    import onnx
    from dlinfer.export.onnx_file import set_spec
    from dlinfer.optimize.run import optimize
    from dlinfer.spec import InputSpec, ModelSpec, OutputSpec
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    size = 8
    weights = rng.standard_normal((size * size * 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"])],
        "linear", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                 [None, size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        [onnx.numpy_helper.from_array(weights, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    spec = ModelSpec(name="linear", task="classification",
                     inputs=(InputSpec(name="images", shape=(None, size, size, 3),
                                       dtype="float32", kind="image", layout="NHWC",
                                       color="RGB", scale=1 / 255),),
                     outputs=(OutputSpec(name="probabilities", kind="probabilities",
                                         labels=("a", "b", "c")),))
    set_spec(proto, spec)
    model = str(tmp_path / "linear.onnx")
    onnx.save(proto, model)
    data = _labelled_folder(tmp_path / "data", photos)
    report = optimize(model, str(tmp_path / "int8.onnx"), "int8", calibrate=data, eval=data,
                      max_drop=100)
    assert report.metrics["metric"] == "accuracy"
    assert report.metrics["samples"] == 12
    assert "only 12 samples" in report.metrics["warning"]
    text = report.format()
    assert "12 images from" in text and "with labels" in text and "accuracy:" in text
    assert "warning:     only 12 samples" in text
    # the labels are the folders': the float model's accuracy is its agreement with them
    from dlinfer import Classifier
    from dlinfer.verification.labelled import folder_files, folder_labels

    files = folder_files(data, 12)
    truth = folder_labels(data, 12, ("a", "b", "c"))
    float_acc = np.mean(Classifier(model).predict_proba(files).argmax(1) == truth)
    assert report.metrics["accuracy_float32"] == pytest.approx(float_acc)
    assert main(["optimize", model, "--out", str(tmp_path / "fp16.onnx"), "--mode", "fp16",
                 "--eval", data]) == 0
    assert "accuracy:" in capsys.readouterr().out
