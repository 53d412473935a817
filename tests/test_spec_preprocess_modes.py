"""`dlinfer spec set` describes the whole image pipeline of a model we did not make.

A plain ONNX classifier (tests/onnx_models.build_plain_classifier, NCHW like a PyTorch
export) gets each resize mode and each preset with `dlinfer spec set`; Classifier's batch
is then checked against a NumPy/Pillow reference of that pipeline on real photos:

- ``pad-end`` as PaddleOCR's text-direction classifier (3x48x192: height 48 keeping the
  aspect ratio, width ``min(192, ceil(48 * w / h))``, ``(x / 255 - 0.5) / 0.5``, the right
  padded with 0 after normalization);
- ``torchvision`` (shorter side 256 with Pillow's antialiased bilinear, centre crop 224,
  ImageNet mean and std);
- ``letterbox`` with a pixel pad and with a pad in model-input units.

And the spec file itself: version 3 holds one description per tensor; versions 1 and 2
still load.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from dlinfer import Classifier
from dlinfer.errors import SpecError
from dlinfer.preprocessing.presets import PRESET_NAMES, PRESETS, apply_preprocess
from dlinfer.spec import METADATA_KEY, InputSpec, ModelSpec, OutputSpec
from dlinfer.tools import cli
from onnx_models import ConvNet, build_plain_classifier
from optional import requires
from reference import assert_close, geometry, preprocess, resize_matrix, softmax

SEED = 20_261_206
# The kernel computes in float32 and the references in float64 (Pillow's part in uint8,
# which both sides share): 1e-4 in model-input units is about 1/40 of a pixel level at
# std 0.225, far below the smallest real difference (one level: 0.017 at std 0.225).
ATOL = 1e-4


@pytest.fixture(scope="module")
def net() -> ConvNet:
    rng = np.random.default_rng(SEED)
    return ConvNet(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
                   rng.normal(0, 0.1, 8).astype(np.float32),
                   rng.normal(0, 1.0, (8, 4)).astype(np.float32),
                   rng.normal(0, 0.1, 4).astype(np.float32))


def plain_model(net: ConvNet, folder, height=None, width=None) -> str:
    path = str(folder / f"plain_{height}x{width}.onnx")
    onnx.save(build_plain_classifier(net, height, width), path)
    return path


def spec_set(path: str, *flags: str) -> Classifier:
    assert cli.main(["spec", "set", path, "--task", "classification", "--logits", *flags]) == 0
    return Classifier(path, threads=1)


def stored_spec(path: str) -> dict:
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    return json.loads(props[METADATA_KEY])


def word_crops(photos) -> list[np.ndarray]:
    """Strips of real photos with text-line shapes: short words (1.5:1) to long lines (9:1)."""
    coffee, chelsea, astronaut = photos["coffee"], photos["chelsea"], photos["astronaut"]
    return [coffee[100:140, 50:110], chelsea[40:72, 10:200], astronaut[200:230, 100:370],
            coffee[300:348, 0:400], chelsea[150:170, 30:70]]


# ---- pad-end: PaddleOCR's text-direction classifier ------------------------------------

def pad_end_reference(image: np.ndarray, height: int = 48, width: int = 192) -> np.ndarray:
    """PaddleOCR's ``resize_norm_img`` in float64 (without OpenCV's uint8 rounding):
    resize to (48, min(192, ceil(48 w / h))) bilinear, (x / 255 - 0.5) / 0.5, pad 0."""
    h, w, _ = image.shape
    rw = min(width, math.ceil(height * w / h))
    resized = np.einsum("ry,yxc->rxc", resize_matrix("bilinear", h, height),
                        image.astype(np.float64))
    resized = np.einsum("rxc,sx->rsc", resized, resize_matrix("bilinear", w, rw))
    out = np.zeros((3, height, width))
    out[:, :, :rw] = (resized.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return out.astype(np.float32)


def test_pad_end_as_paddleocr(net, tmp_path, photos):
    path = plain_model(net, tmp_path, 48, 192)
    clf = spec_set(path, "--labels", "0,180,a,b", "--color", "BGR", "--resize", "pad-end",
                   "--mean", "0.5", "--std", "0.5", "--pad-value", "0")
    crops = word_crops(photos)
    # The crops are RGB arrays; the model takes BGR: dlinfer swaps, the reference gets BGR.
    batch = clf.preprocess(crops)
    expected = np.stack([pad_end_reference(c[..., ::-1]) for c in crops])
    assert_close(batch, expected, atol=ATOL, layout="NCHW")
    widths = [min(192, math.ceil(48 * c.shape[1] / c.shape[0])) for c in crops]
    assert widths == [72, 192, 192, 192, 96]  # short words are padded, long lines squeezed
    assert (batch[0, :, :, 72:] == 0).all() and (batch[4, :, :, 96:] == 0).all()
    assert_close(clf.predict_proba(crops), softmax(np.asarray(
        reference_logits(expected, net))).astype(np.float32), atol=1e-5, rtol=1e-4)


@requires("cv2")
def test_pad_end_against_paddleocrs_opencv_pipeline(net, tmp_path, photos):
    """PaddleOCR resizes with OpenCV, which rounds to uint8 after its fixed-point
    bilinear: within one pixel level, 1/127.5 = 0.0078 in model-input units."""
    import cv2

    path = plain_model(net, tmp_path, 48, 192)
    clf = spec_set(path, "--color", "BGR", "--resize", "pad-end", "--mean", "0.5",
                   "--std", "0.5", "--pad-value", "0")
    for crop in word_crops(photos):
        bgr = np.ascontiguousarray(crop[..., ::-1])
        h, w = bgr.shape[:2]
        rw = min(192, math.ceil(48 * w / h))
        theirs = np.zeros((3, 48, 192), np.float32)
        theirs[:, :, :rw] = (cv2.resize(bgr, (rw, 48)).astype(np.float32).transpose(2, 0, 1)
                             / 255 - 0.5) / 0.5
        assert_close(clf.preprocess(crop)[0], theirs, atol=1.01 / 127.5, layout="NCHW")


# ---- torchvision: NCHW ImageNet ----------------------------------------------------------

def torchvision_reference(image: np.ndarray, truncate: bool = False) -> np.ndarray:
    """Resize(256) with Pillow's bilinear (antialiased), CenterCrop(224), ToTensor,
    Normalize.  dlinfer rounds the longer side (256 * long / short) to the nearest pixel;
    torchvision truncates it (``truncate``): the same on square images."""
    from PIL import Image

    h, w = image.shape[:2]
    s = 256 / min(h, w)
    size = [int(d * s) if truncate else math.floor(d * s + 0.5) for d in (h, w)]
    size = [max(256, d) for d in size]
    resized = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR))
    top, left = (size[0] - 224) // 2, (size[1] - 224) // 2
    crop = resized[top:top + 224, left:left + 224].astype(np.float64) / 255
    mean, std = PRESETS["torchvision"]["mean"], PRESETS["torchvision"]["std"]
    return ((crop - mean) / std).transpose(2, 0, 1).astype(np.float32)


def reference_logits(batch: np.ndarray, net: ConvNet) -> np.ndarray:
    from reference import conv2d_nhwc

    x = np.asarray(batch, np.float64).transpose(0, 2, 3, 1)
    y = conv2d_nhwc(x, net.conv_w.transpose(2, 3, 1, 0), net.conv_b, strides=(2, 2),
                    pads=(1, 1, 1, 1))
    return np.maximum(y, 0.0).mean(axis=(1, 2)) @ net.fc_w.astype(np.float64) + net.fc_b


def test_torchvision_preset_on_an_nchw_imagenet_classifier(net, tmp_path, photos):
    path = plain_model(net, tmp_path)  # dynamic height and width: the preset gives 224
    clf = spec_set(path, "--preprocess", "torchvision")
    spec = clf.spec.input
    assert spec.shape == (None, 3, 224, 224) and spec.resize == "center-crop"
    assert (spec.crop_fraction, spec.antialias, spec.color) == (0.875, True, "RGB")
    images = list(photos.values())
    batch = clf.preprocess(images)
    expected = np.stack([torchvision_reference(im) for im in images])
    assert_close(batch, expected, atol=ATOL, layout="NCHW")
    square = photos["astronaut"]  # 512x512: torchvision's own rounding gives the same
    assert_close(clf.preprocess(square)[0], torchvision_reference(square, truncate=True),
                 atol=ATOL, layout="NCHW")
    assert_close(clf.predict_proba(images), softmax(reference_logits(expected, net))
                 .astype(np.float32), atol=1e-5, rtol=1e-4)


# ---- letterbox, and every mode and preset ------------------------------------------------

@pytest.mark.parametrize("pad_flag, pad", [("--pad-pixel", 114.0), ("--pad-value", -2.5)],
                         ids=["pad-pixel", "pad-value"])
def test_letterbox(net, tmp_path, photos, pad_flag, pad):
    path = plain_model(net, tmp_path, 96, 128)
    clf = spec_set(path, "--resize", "letterbox", pad_flag, str(pad), "--interpolation",
                   "area", "--preprocess", "keras-torch")
    images = [photos["chelsea"], photos["coffee"][:, :200]]  # wider, then narrower than 4:3
    batch = clf.preprocess(images)
    p = PRESETS["keras-torch"]
    pixel_pad = pad if pad_flag == "--pad-pixel" else 0.0
    expected = np.stack([preprocess(im, (96, 128), in_color="RGB", color="RGB", resize="area",
                                    fit="letterbox", pad=pixel_pad, scale=p["scale"],
                                    mean=p["mean"], std=p["std"], layout="NCHW")
                         for im in images])
    if pad_flag == "--pad-value":  # the border is written in model-input units, exactly
        for slot, image in zip(expected, images):
            rh, rw, top, left = geometry(*image.shape[:2], 96, 128, "letterbox")
            inside = np.zeros((96, 128), bool)
            inside[top:top + rh, left:left + rw] = True
            slot[:, ~inside] = pad
        assert (batch[1, :, :, :40] == pad).all()  # 400x200 -> 96x48 at left 40
    assert_close(batch, expected, atol=ATOL, layout="NCHW")


MODES = {  # --resize flags -> reference.preprocess's fit
    "stretch": ([], "stretch", 1.0),
    "center-crop": (["--crop-fraction", "0.8"], "crop", 0.8),
    "letterbox": (["--pad-pixel", "7"], "letterbox", 1.0),
}


@pytest.mark.parametrize("mode", [*MODES, "pad-end"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "area"])
def test_each_resize_mode(net, tmp_path, photos, mode, interpolation):
    path = plain_model(net, tmp_path, 40, 56)
    extra, fit, ratio = MODES.get(mode, ([], None, 1.0))
    clf = spec_set(path, "--resize", mode, *extra, "--interpolation", interpolation)
    images = [photos["chelsea"], photos["china"][:80, :300]]
    batch = clf.preprocess(images)
    if mode == "pad-end":
        spec = clf.preprocessing
        rws = [min(56, math.ceil(40 * im.shape[1] / im.shape[0])) for im in images]
        for slot, im, rw in zip(batch, images, rws):
            want = preprocess(im, (40, rw), in_color="RGB", color="RGB", resize=interpolation,
                              scale=spec.scale, layout="NCHW")
            assert_close(slot[:, :, :rw], want, atol=ATOL, layout="NCHW")
            assert (slot[:, :, rw:] == 0).all()  # the default pad: pixel 0, here 0.0
        return
    expected = np.stack([preprocess(im, (40, 56), in_color="RGB", color="RGB",
                                    resize=interpolation, fit=fit, crop_ratio=ratio,
                                    pad=7.0 if mode == "letterbox" else 0.0, layout="NCHW")
                         for im in images])
    assert_close(batch, expected, atol=ATOL, layout="NCHW")


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_each_preset(net, tmp_path, photos, preset):
    path = plain_model(net, tmp_path)
    clf = spec_set(path, "--preprocess", preset, "--size", "224")
    fields = {k: v for k, v in PRESETS[preset].items() if k != "size"}
    assert {k: getattr(clf.spec.input, k) for k in fields} == {
        k: tuple(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    image = photos["flower"]
    color = fields.get("color", "RGB")
    fit, ratio = ("crop", 0.875) if preset == "torchvision" else ("stretch", 1.0)
    if preset == "torchvision":
        expected = torchvision_reference(image)
    else:
        expected = preprocess(image, (224, 224), in_color="RGB", color=color, fit=fit,
                              crop_ratio=ratio, scale=fields["scale"], mean=fields["mean"],
                              std=fields["std"], layout="NCHW")
    assert_close(clf.preprocess(image)[0], expected, atol=ATOL * 255 * fields["scale"]
                 if preset in ("raw", "keras-caffe") else ATOL, layout="NCHW")


def test_flags_change_single_fields_after_the_preset(net, tmp_path):
    path = plain_model(net, tmp_path)
    clf = spec_set(path, "--preprocess", "torchvision", "--crop-fraction", "1",
                   "--no-antialias", "--size", "299")
    i = clf.spec.input
    assert (i.shape, i.crop_fraction, i.antialias, i.mean) == (
        (None, 3, 299, 299), 1.0, False, PRESETS["torchvision"]["mean"])
    # a resize mode that has no crop drops the fraction; a pad needs a padding mode
    assert spec_set(path, "--resize", "letterbox").spec.input.crop_fraction == 1.0
    assert cli.main(["spec", "set", path, "--resize", "stretch", "--pad-value", "0"]) == 1


# ---- the spec file: version 3, and versions 1 and 2 ---------------------------------------

def _spec() -> ModelSpec:
    image = apply_preprocess(InputSpec("x", (None, 3, None, None), layout="NCHW",
                                       color="RGB"), "torchvision")
    return ModelSpec("m", "classification", inputs=[image],
                     outputs=[OutputSpec("p", labels=("a", "b"))])


def test_version_3_holds_one_description_per_tensor():
    raw = json.loads(_spec().to_json())
    assert raw["spec_version"] == 3
    assert not {"input", "output", "labels", "threshold"} & set(raw)
    assert ModelSpec.from_json(json.dumps(raw)) == _spec()
    raw["labels"] = ["b", "a"]  # an edit a version-3 reader would ignore is refused
    with pytest.raises(SpecError, match=r"unknown top-level key\(s\) \['labels'\]"):
        ModelSpec.from_json(json.dumps(raw))


def _as_version_2(spec: ModelSpec) -> dict:
    raw = json.loads(spec.to_json())
    for i in raw["inputs"]:  # version 2 had no resize fields
        for key in ("resize", "crop_fraction", "pad_value", "pad_pixel", "interpolation",
                    "antialias", "batch_axis"):
            i.pop(key)
    raw.update(spec_version=2, input=raw["inputs"][0], labels=["a", "b"], threshold=None,
               output={"name": "p", "kind": "probabilities"})
    return raw


def test_version_2_still_loads_and_a_disagreeing_copy_is_refused():
    plain = ModelSpec("m", "classification", inputs=[InputSpec("x", (None, 8, 8, 3),
                                                               color="RGB")],
                      outputs=[OutputSpec("p", labels=("a", "b"))])
    raw = _as_version_2(plain)
    assert ModelSpec.from_json(json.dumps(raw)) == plain
    raw["extra"] = {"preprocess": {"resize": "area", "crop": 0.875}}  # version 2's resize
    moved = ModelSpec.from_json(json.dumps(raw))
    assert (moved.input.resize, moved.input.crop_fraction, moved.input.interpolation,
            moved.extra) == ("center-crop", 0.875, "area", {})
    raw["labels"] = ["cat", "dog"]  # edited in one place only: which one is meant?
    with pytest.raises(SpecError, match="top-level 'labels' that differs"):
        ModelSpec.from_json(json.dumps(raw))


def test_version_1_still_loads():
    raw = {"spec_version": 1, "name": "old", "task": "classification",
           "input": {"name": "x", "shape": [None, 8, 8, 1], "dtype": "float32",
                     "layout": "NHWC", "color": "GRAY", "scale": 1.0, "mean": 0.5},
           "output": {"name": "p", "kind": "probabilities"}, "labels": ["a", "b"]}
    spec = ModelSpec.from_json(json.dumps(raw))
    assert spec.labels == ("a", "b") and spec.input.mean == (0.5,)
    assert spec.input.resize == "stretch" and spec.input.batch_axis == 0
    # the Python API takes one number or one per channel, as the JSON does
    made = InputSpec("x", (None, 8, 8, 3), color="RGB", mean=0.5, std=[0.2, 0.3, 0.4])
    assert (made.mean, made.std) == ((0.5,), (0.2, 0.3, 0.4))


@requires("tensorflow")
def test_to_onnx_takes_scalars_and_a_preset(tmp_path):
    import keras
    from dlinfer.export import to_onnx

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.Flatten()(inputs)))
    spec = ModelSpec.from_json(dict((p.key, p.value) for p in to_onnx(
        model, mean=0.5, std=0.5, labels=["a", "b"]).metadata_props)[METADATA_KEY])
    assert (spec.input.mean, spec.input.std, spec.input.scale) == ((0.5,), (0.5,), 1 / 255)
    proto = to_onnx(model, preprocess="keras-tf", std=2, labels=["a", "b"])
    spec = ModelSpec.from_json(dict((p.key, p.value) for p in proto.metadata_props)
                               [METADATA_KEY])
    assert (spec.input.scale, spec.input.mean, spec.input.std) == (1 / 127.5, (1.0,), (2.0,))


# ---- every consumer takes the same pipeline -----------------------------------------------

def test_every_consumer_honours_the_resize(net, tmp_path, photos):
    """predict_folder and the Batcher give Classifier's answer on a pad-end, antialiased
    model (the server: below)."""
    import dlinfer
    from PIL import Image

    path = plain_model(net, tmp_path, 48, 192)
    clf = spec_set(path, "--labels", "a,b,c,d", "--resize", "pad-end", "--pad-value", "-1",
                   "--antialias", "--preprocess", "keras-tf")
    crops = word_crops(photos)
    direct = clf.predict(crops)
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, crop in enumerate(crops):
        Image.fromarray(crop).save(folder / f"{i}.png")
    by_file = dict(clf.predict_folder(folder, batch_size=2, progress=False))
    assert [by_file[str(folder / f"{i}.png")].probability for i in range(len(crops))] == \
        pytest.approx([p.probability for p in direct], abs=1e-6)
    with dlinfer.Batcher(clf, max_batch_size=4, max_delay_ms=50) as batcher:
        batched = [f.result() for f in batcher.submit_many(crops)]
    assert [p.probability for p in batched] == pytest.approx([p.probability for p in direct],
                                                             abs=1e-6)


@requires("starlette", "uvicorn")
def test_serve_honours_the_resize(net, tmp_path, photos):
    """`dlinfer serve`'s own route and the v2 protocol: Classifier's answer."""
    import io

    from PIL import Image
    from serve_helpers import Server, call

    path = plain_model(net, tmp_path, 48, 192)
    clf = spec_set(path, "--labels", "a,b,c,d", "--resize", "pad-end", "--pad-value", "-1",
                   "--antialias", "--preprocess", "keras-tf")
    crops = word_crops(photos)
    direct = clf.predict(crops)
    server = Server(tmp_path, f"cls={path}", "--threads", "1", "--log-level", "warning")
    try:
        for crop, want in zip(crops[:2], direct):
            png = io.BytesIO()
            Image.fromarray(crop).save(png, format="PNG")
            status, body = call(server, "POST", "/v1/models/cls/predict", png.getvalue())
            assert status == 200
            assert body["predictions"][0]["probability"] == pytest.approx(want.probability,
                                                                          abs=1e-6)
            header = {"inputs": [{"name": "input", "datatype": "UINT8",
                                  "shape": [1, *crop.shape], "data": crop.ravel().tolist()}]}
            status, body = call(server, "POST", "/v2/models/cls/infer",
                                json.dumps(header).encode(),
                                {"content-type": "application/json"})
            assert status == 200, body
            (output,) = body["outputs"]
            assert np.asarray(output["data"]).argmax() == want.index
    finally:
        assert server.stop() == 0, server.output()


@pytest.mark.parametrize("crop, size", [("pad-end", (48, 192)), ("letterbox", (96, 128))])
@pytest.mark.parametrize("antialias", [False, True], ids=["plain", "antialias"])
def test_modes_agree_across_layout_dtype_and_batch_paths(photos, crop, size, antialias):
    """NHWC is NCHW transposed; float16 is float32 rounded (half a float16 ulp at |x| <= 2:
    1e-3); a uint8 batch array takes the same path as a list of its images."""
    import dlinfer

    images = [photos["chelsea"], photos["coffee"][:, :200]]
    common = dict(size=size, crop=crop, pad_value=-1, mean=0.5, std=0.5,
                  antialias=antialias)
    nchw = dlinfer.preprocess(images, layout="NCHW", **common)
    assert_close(dlinfer.preprocess(images, layout="NHWC", **common).transpose(0, 3, 1, 2),
                 nchw, layout="NCHW")
    half = dlinfer.preprocess(images, layout="NCHW", dtype="float16", **common)
    assert_close(half.astype(np.float32), nchw, atol=1e-3, layout="NCHW")
    same = np.stack([photos["chelsea"]] * 3)
    assert_close(dlinfer.preprocess(same, layout="NCHW", **common),
                 dlinfer.preprocess(list(same), layout="NCHW", **common), layout="NCHW")
