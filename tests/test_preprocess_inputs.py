"""Images users pass that dlinfer must refuse or convert: bad arrays and parameters,
bad and hostile files, Pillow decoding (EXIF, modes, draft JPEGs), and preprocessing
driven by a model's spec (Classifier, folders, the CLI).
"""

from __future__ import annotations

import io
import os

import dlinfer
import numpy as np
import pytest
import reference as ref
from PIL import Image


def _image(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# -- bad input: each a dlinfer exception naming the index or file --------------------------

@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        ([np.zeros((4, 4, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)], dlinfer.InputShapeError,
         "image 1: the image is empty"),
        ([np.zeros((4, 4, 2), np.uint8)], dlinfer.ChannelError, "1, 3 or 4 channels, got 2"),
        ([np.zeros((4, 4, 3), np.float32)], dlinfer.InputDtypeError, "must be uint8"),
        ([np.zeros((4, 4, 3), np.uint16)], dlinfer.InputDtypeError, "got dtype uint16"),
        ([np.zeros((2, 4, 4, 3), np.uint8)], dlinfer.InputRankError, "rank 2"),
        ([np.zeros((4,), np.uint8)], dlinfer.InputRankError, "got shape (4,)"),
        ([], dlinfer.EmptyBatchError, "empty"),
    ],
    ids=["zero-size", "2-channels", "float32", "uint16", "rank4-in-list", "rank1", "empty"],
)
def test_bad_arrays(images, error, message):
    import re

    with pytest.raises(error, match=re.escape(message)):
        dlinfer.preprocess(images, size=8)


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"resize": "cubic"}, "resize must be one of"), ({"crop": 2.0}, "crop must be"),
     ({"std": (0.0,)}, "non-zero"), ({"mean": (1, 2)}, "mean needs 1 or 3"),
     ({"layout": "CHW"}, "layout"), ({"dtype": "int8"}, "dtype"), ({"size": 0}, "size"),
     ({"input_color": "RGB"}, "input_color RGB needs 3 channel"), ({"threads": -1}, "threads")],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_bad_parameters(kw, message):
    with pytest.raises(dlinfer.InputError, match=message):
        dlinfer.preprocess(np.zeros((4, 4, 1), np.uint8), size=kw.pop("size", 8), **kw)


def test_out_buffer_must_fit():
    with pytest.raises(dlinfer.InputShapeError, match="out must be a float32 array of shape"):
        dlinfer.preprocess(np.zeros((4, 4, 3), np.uint8), size=8, out=np.empty((1, 8, 8, 1)))


def _png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_bad_files_name_the_file(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes(Image.fromarray(_image((40, 40, 3), 1))))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    corrupt = tmp_path / "corrupt.jpg"
    data = bytearray(_png_bytes(Image.fromarray(_image((64, 64, 3), 2)), "JPEG"))
    data[200:] = b"\x00" * (len(data) - 200)
    corrupt.write_bytes(bytes(data[:400]))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = [(truncated, "truncated.png: corrupt or truncated"),
             (corrupt, "corrupt.jpg: corrupt or truncated"),
             (text, "notes.png: not an image"), (tmp_path / "gone.png", "gone.png: file not found")]
    for path, message in cases:
        with pytest.raises(dlinfer.ImageDecodeError, match=message):
            dlinfer.preprocess([str(good), str(path)], size=8, threads=2)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (3000, 2000)).save(path)  # 6 MB of pixels in a tiny file
    assert os.path.getsize(path) < 50_000
    with pytest.raises(dlinfer.DecompressionBombError, match=r"bomb.png: a 3000x2000 .*budget"):
        dlinfer.preprocess(str(path), size=8, max_image_bytes=10_000_000)
    assert dlinfer.preprocess(str(path), size=8, max_image_bytes=20_000_000).shape == (1, 8, 8, 3)
    assert issubclass(dlinfer.DecompressionBombError, dlinfer.ImageDecodeError)


# -- decoding with Pillow ------------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(_image((20, 40, 3), 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = dlinfer.preprocess(str(path), scale=1.0)
    assert out.shape == (1, 40, 20, 3)
    upright = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_270), np.float32)
    np.testing.assert_array_equal(out[0], upright)


def test_modes_are_converted(tmp_path):
    rgb = _image((12, 10, 3), 6)
    cases = {}
    cases["palette"] = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    rgba = np.dstack([rgb, np.where(np.arange(10) < 5, 0, 255).astype(np.uint8)[None, :]
                      .repeat(12, 0)])
    cases["rgba"] = Image.fromarray(rgba, "RGBA")
    cases["cmyk"] = Image.fromarray(rgb).convert("CMYK")
    sixteen = (np.arange(120, dtype=np.uint16).reshape(12, 10) * 500)
    cases["16bit"] = Image.fromarray(sixteen)  # mode I;16
    for name, img in cases.items():
        path = tmp_path / f"{name}.{'jpg' if name == 'cmyk' else 'png'}"
        img.save(path, **({"quality": 100} if name == "cmyk" else {}))
        out = dlinfer.preprocess(str(path), scale=1.0, color="RGB")[0]
        assert out.shape == (12, 10, 3), name
        if name == "rgba":  # transparent half composited onto black
            assert (out[:, :5] == 0).all() and (out[:, 5:] == rgb[:, 5:]).all()
        if name == "16bit":  # 0..65535 scaled to 0..255, rounded
            want = np.round(sixteen.astype(np.float64) * 255 / 65535)
            np.testing.assert_array_equal(out[..., 0], want)
        if name == "palette":
            np.testing.assert_array_equal(out, np.asarray(img.convert("RGB"), np.float32))
        if name == "cmyk":
            assert np.abs(out - rgb).mean() < 8


def test_jpeg_draft_mode_for_large_photos(tmp_path, photos):
    big = Image.fromarray(photos["china"]).resize((2560, 1708))
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    from dlinfer.preprocessing.decode import decode_file

    arr, _ = decode_file(path, target=lambda h, w: (224, 224))
    assert arr.shape[0] < 1708 and arr.shape[0] >= 448  # decoded at 1/2 or 1/4 scale
    full, _ = decode_file(path)
    assert full.shape == (1708, 2560, 3)
    spec = dlinfer.PreprocessSpec(size=224, **ref.IMAGENET)
    drafted = spec(str(path))
    exact = spec.replace(draft=False)(str(path))
    assert np.abs(drafted - exact).mean() < 0.1  # mostly smoother, never a different picture


# -- PreprocessSpec from a model, Classifier, folders, CLI ---------------------------------

def test_spec_from_model_reads_the_metadata(mnist_onnx):
    spec = dlinfer.PreprocessSpec.from_model(mnist_onnx)
    assert (spec.size, spec.color, spec.layout, spec.dtype) == ((28, 28), "GRAY", "NHWC",
                                                                "float32")
    assert spec == dlinfer.PreprocessSpec.from_model(dlinfer.Model(mnist_onnx))
    clf = dlinfer.Classifier(mnist_onnx)
    assert clf.preprocessing == spec
    with pytest.raises(dlinfer.SpecError):
        dlinfer.PreprocessSpec.from_model(None)


def test_classifier_resizes_and_converts_arrays(mnist_onnx, mnist_digits):
    clf = dlinfer.Classifier(mnist_onnx)
    digits = mnist_digits.x_test[:8]
    base = clf.predict(digits)
    big_rgb = [np.repeat(np.kron(d, np.ones((2, 2), np.uint8))[:, :, None], 3, axis=2)
               for d in digits]  # 56x56 RGB: resized by the area-exact 2x and gray-mixed
    assert [p.index for p in clf.predict(big_rgb)] == [p.index for p in base]
    x = clf.preprocess(big_rgb)
    want = ref.preprocess_batch(big_rgb, (28, 28), in_colors=["RGB"] * 8, color="GRAY")
    ref.assert_close(x, want, atol=ref.PREPROCESS_ATOL)


def test_predict_folder_streams_batches(tmp_path, mnist_onnx, mnist_digits):
    clf = dlinfer.Classifier(mnist_onnx, threads=2)
    digits = mnist_digits.x_test[:11]
    (tmp_path / "sub").mkdir()
    paths = []
    for i, d in enumerate(digits):
        path = tmp_path / ("sub" if i % 3 == 0 else "") / f"d{i:02d}.png"
        Image.fromarray(d).save(path)
        paths.append(str(path))
    (tmp_path / "readme.txt").write_text("skipped: not an image extension")
    got = list(clf.predict_folder(tmp_path, batch_size=4, progress=False))
    assert sorted(p for p, _ in got) == sorted(paths)
    want = dict(zip(paths, clf.predict(paths)))
    for path, pred in got:
        assert pred.index == want[path].index
        assert pred.probability == pytest.approx(want[path].probability, abs=1e-6)
    bad = tmp_path / "zz_bad.png"
    bad.write_text("broken")
    with pytest.raises(dlinfer.ImageDecodeError, match="zz_bad.png"):
        list(clf.predict_folder(tmp_path, batch_size=4, progress=False))
    skipped = list(clf.predict_folder(tmp_path, batch_size=4, progress=False, on_error="skip"))
    assert len(skipped) == 11


def test_cli_predict_folder_to_csv(tmp_path, mnist_onnx, digit_pngs):
    import csv

    from test_cli import dlinfer_cli

    folder = os.path.dirname(digit_pngs[0][0])
    out = tmp_path / "out.csv"
    proc = dlinfer_cli("predict", mnist_onnx, folder, "--batch-size", "4", "--csv", str(out),
                       "--top-k", "2")
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == sorted(os.path.basename(p) for p in digit_pngs[0])
    assert sum(int(r["index"]) == y for r, y in zip(rows, digit_pngs[1])) >= 8
    assert all(len(r["top"].split(";")) == 2 for r in rows)
    assert "10 images" in proc.stderr
