"""`dlinfer spec show/set` on a plain ONNX classifier with no dlinfer metadata.

The model (tests/onnx_models.build_plain_classifier) looks like a PyTorch export:
NCHW float input with a dynamic height and width, a Conv, logits out.  After one
`dlinfer spec set`, Classifier must give what a NumPy reference of the graph gives
on real photos, and every refused value must leave the file byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from dlinfer import Classifier, Model
from dlinfer.errors import MissingExtraError
from dlinfer.preprocessing.transform import PreprocessSpec
from dlinfer.tools import cli, spec_tool
from onnx_models import ConvNet, Dense, build_mlp, build_plain_classifier
from optional import requires
from reference import assert_close, conv2d_nhwc, normalize_u8_to_f32_nhwc

SEED = 20_250_615
LABELS = ("tench", "goldfish", "shark", "tiger shark", "hammerhead")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE = (48, 64)
IMAGENET = ["--task", "classification", "--mean", "0.485,0.456,0.406",
            "--std", "0.229,0.224,0.225", "--color", "RGB", "--size", "48x64", "--logits"]


@pytest.fixture(scope="module")
def net() -> ConvNet:
    rng = np.random.default_rng(SEED)
    return ConvNet(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
                   rng.normal(0, 0.1, 8).astype(np.float32),
                   rng.normal(0, 1.0, (8, 5)).astype(np.float32),
                   rng.normal(0, 0.1, 5).astype(np.float32))


@pytest.fixture
def plain(net, tmp_path) -> str:
    import onnx

    path = str(tmp_path / "resnet_like.onnx")
    onnx.save(build_plain_classifier(net), path)
    return path


@pytest.fixture
def labels_file(tmp_path) -> str:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(f"  {label} " for label in LABELS) + "\n\n")  # blank lines skip
    return str(path)


def reference_logits(batch: np.ndarray, net: ConvNet) -> np.ndarray:
    """The graph in NumPy: conv (reference.conv2d_nhwc), relu, mean over pixels, dense."""
    x = np.asarray(batch, np.float64).transpose(0, 2, 3, 1)
    y = conv2d_nhwc(x, net.conv_w.transpose(2, 3, 1, 0), net.conv_b, strides=(2, 2),
                    pads=(1, 1, 1, 1))
    pooled = np.maximum(y, 0.0).mean(axis=(1, 2))
    return pooled @ net.fc_w.astype(np.float64) + net.fc_b


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def spec_cli(*args: str) -> int:
    return cli.main(["spec", *args])


def test_spec_set_makes_a_plain_classifier_usable(plain, labels_file, net, photos, capsys):
    assert spec_cli("set", plain, *IMAGENET, "--labels", labels_file) == 0
    assert "wrote the spec of" in capsys.readouterr().out
    clf = Classifier(plain, threads=1)
    assert clf.labels == list(LABELS) and clf.output.kind == "logits"
    prep = clf.preprocessing
    assert (prep.size, prep.layout, prep.color, prep.mean, prep.std) == (SIZE, "NCHW", "RGB",
                                                                         MEAN, STD)
    images = list(photos.values())
    batch = clf.preprocess(images)
    assert batch.shape == (5, 3, *SIZE) and batch.dtype == np.float32
    # the normalization: (pixels * 1/255 - mean) / std of the same resized pixels
    pixels = PreprocessSpec(size=SIZE, layout="NCHW", color="RGB", scale=1.0).model_input(images)
    mean, std = np.array(MEAN)[:, None, None], np.array(STD)[:, None, None]
    assert_close(batch, ((pixels / 255.0 - mean) / std).astype(np.float32), atol=2e-6,
                 rtol=1e-6, layout="NCHW")
    # the model: Classifier's probabilities are softmax(the graph's logits)
    expected = softmax(reference_logits(batch, net))
    proba = clf.predict_proba(images)
    assert_close(proba, expected.astype(np.float32), atol=1e-5, rtol=1e-4)
    preds = clf.predict(images, top_k=3)
    assert [p.label for p in preds] == [LABELS[i] for i in expected.argmax(axis=1)]
    assert np.ptp(proba, axis=0).max() > 0.01  # the photos get different answers


def test_normalization_of_photo_crops_at_the_model_size(plain, photos):
    """No resize in play: crops of the model's size are only normalized."""
    assert spec_cli("set", plain, *IMAGENET) == 0
    crops = np.stack([p[:SIZE[0], :SIZE[1]] for p in photos.values()])
    got = Classifier(plain, threads=1).preprocess(crops)
    expected = normalize_u8_to_f32_nhwc(crops, 1 / 255, MEAN, STD).transpose(0, 3, 1, 2)
    assert_close(got, expected, atol=1e-6, rtol=1e-6, layout="NCHW")


def shown(path: str, capsys) -> tuple[str, dict]:
    """`dlinfer spec show`'s text and its --json."""
    assert spec_cli("show", path) == 0
    text = capsys.readouterr().out
    assert spec_cli("show", path, "--json") == 0
    return text, json.loads(capsys.readouterr().out)


def test_spec_show_before_and_after(plain, labels_file, capsys):
    text, data = shown(plain, capsys)
    assert "spec:      none" in text
    assert "input:     input: image float32(N, 3, N, N) NCHW RGB" in text
    assert "output:    logits: float32(N, 5)" in text
    assert data["spec"] is None and data["inferred"]["inputs"][0]["layout"] == "NCHW"

    assert spec_cli("set", plain, *IMAGENET, "--labels", labels_file, "--name", "fish") == 0
    capsys.readouterr()
    text, data = shown(plain, capsys)
    assert "name:      fish" in text
    assert "input:     input: image float32(N, 3, 48, 64) NCHW RGB, x * 0.00392157" in text
    assert "output:    logits: logits, labels tench, goldfish, shark" in text
    spec = data["spec"]
    assert spec["spec_version"] == 3 and spec["outputs"][0]["labels"] == list(LABELS)
    assert "labels" not in spec and "input" not in spec  # one description per tensor
    assert spec["inputs"][0]["shape"] == [None, 3, 48, 64]
    assert spec["extra"]["producer"] == "pytorch 2.5.0"


def test_spec_set_starts_from_the_files_spec_and_out_leaves_the_source(plain, labels_file,
                                                                       tmp_path):
    assert spec_cli("set", plain, *IMAGENET, "--labels", labels_file) == 0
    before = open(plain, "rb").read()
    other = str(tmp_path / "bgr.onnx")
    assert spec_cli("set", plain, "--out", other, "--color", "BGR", "--mean", "0.5") == 0
    assert open(plain, "rb").read() == before
    clf = Classifier(other)
    # what was not given stays: task, labels, size, std, logits
    assert clf.labels == list(LABELS) and clf.output.kind == "logits"
    assert (clf.preprocessing.color, clf.preprocessing.mean, clf.preprocessing.std,
            clf.preprocessing.size) == ("BGR", (0.5,), STD, SIZE)


def test_a_fixed_batch_gets_a_note(net, tmp_path, capsys):
    import onnx

    path = str(tmp_path / "batch1.onnx")
    onnx.save(build_plain_classifier(net, 32, 32, batch=1), path)
    assert spec_cli("set", path, "--task", "classification") == 0
    assert "fixed batch size of 1: every call must send exactly that many" in (
        capsys.readouterr().err)


def test_index_labels_without_labels(plain, photos, capsys):
    assert spec_cli("set", plain, "--task", "classification", "--size", "32", "--logits") == 0
    assert "index labels 0, 1, 2, 3, 4 (5)" in capsys.readouterr().err
    clf = Classifier(plain, threads=1)
    assert clf.labels == ["0", "1", "2", "3", "4"]
    preds = clf.predict(list(photos.values()))
    assert all(p.label == str(p.index) for p in preds)


@requires("starlette", "uvicorn")
def test_serve_takes_a_model_with_index_labels(plain, photos):
    from dlinfer.serving.server import ServeConfig, create_app

    assert spec_cli("set", plain, "--task", "classification", "--size", "32") == 0
    assert create_app(ServeConfig(models=[plain])) is not None


@pytest.fixture
def static(net, tmp_path) -> str:
    import onnx

    path = str(tmp_path / "static.onnx")
    onnx.save(build_plain_classifier(net, 64, 64), path)
    return path


REFUSALS = {
    "std-zero": (["--task", "classification", "--std", "0.229,0,0.225"],
                 "std values must be non-zero"),
    "mean-count": (["--task", "classification", "--mean", "0.4,0.5"],
                   "mean needs 1 or 3 values, got 2"),
    "label-count": (["--task", "classification", "--labels", "a,b,c,d"],
                    "4 labels for output 'logits' (N, 5), which has 5 values per item"),
    "labels-file": (["--task", "classification", "--labels", "missing.txt"],
                    "--labels 'missing.txt': no such file"),
    "input": (["--task", "classification", "--input", "pixels"],
              "--input 'pixels': the model has no input of that name; its inputs are ['input']"),
    "output": (["--task", "classification", "--output", "probs"],
               "--output 'probs': the model has no output of that name"),
    "logits-regression": (["--task", "regression", "--logits"],
                          "--logits applies to a classification task, not regression"),
    "threshold": (["--task", "classification", "--threshold", "0.3"],
                  "--threshold applies to binary_classification"),
    "binary-width": (["--task", "binary_classification"], "reads a single sigmoid unit"),
    "no-task": ([], "the file has no dlinfer spec yet: give --task"),
    "static-size": (["--task", "classification", "--size", "32"],
                    "--size 32x32 contradicts input 'input''s static shape (N, 3, 64, 64)"),
    "gray-3-channels": (["--task", "classification", "--color", "GRAY"],
                        "color GRAY does not fit 3 channel(s)"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_problem_and_leave_the_file_untouched(static, case, capsys):
    args, message = REFUSALS[case]
    before = open(static, "rb").read()
    assert spec_cli("set", static, *args) == 1
    err = capsys.readouterr().err
    assert message in err and f"{static} is unchanged" in err, err
    assert open(static, "rb").read() == before


def test_classification_on_one_sigmoid_unit_is_refused_binary_is_taken(tmp_path, capsys):
    """A binary classifier (one sigmoid unit) read as classification would always say '0'."""
    import onnx

    path = str(tmp_path / "one_unit.onnx")
    layer = Dense(np.ones((4, 1), np.float32), np.array([-1.0], np.float32), "sigmoid")
    onnx.save(build_mlp("one_unit", (None, 4), "p", [layer], input_name="x"), path)
    before = open(path, "rb").read()
    assert spec_cli("set", path, "--task", "classification") == 1
    err = capsys.readouterr().err
    assert ("output 'p' is a classification head, but the graph's output 'p' (N, 1) has 1 "
            "value per item" in err and "use --task binary_classification with two labels "
            "and a threshold (--labels no,yes --threshold 0.5)" in err), err
    assert open(path, "rb").read() == before
    assert spec_cli("set", path, "--task", "binary_classification", "--labels", "no,yes") == 0
    spec = Model(path).spec
    assert (spec.task, spec.labels, spec.threshold) == ("binary_classification", ("no", "yes"),
                                                        0.5)


def test_a_bad_size_is_refused_at_parse_time(static, capsys):
    before = open(static, "rb").read()
    with pytest.raises(SystemExit) as info:
        spec_cli("set", static, "--task", "classification", "--size", "big")
    assert info.value.code == 2 and "--size takes 224 or HxW" in capsys.readouterr().err
    assert open(static, "rb").read() == before


def test_a_file_that_is_not_onnx_is_refused_untouched(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"this is a text file, not a model\n")
    assert spec_cli("set", str(path), "--task", "classification") == 1
    assert "is not an ONNX model" in capsys.readouterr().err
    assert path.read_bytes() == b"this is a text file, not a model\n"


def test_without_onnx_the_error_names_the_extra(plain, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'dlinfer\[reference\]'"):
        spec_tool.load_onnx(plain)


NO_TENSORFLOW = """
import json, sys
import dlinfer
clf = dlinfer.Classifier(sys.argv[1])
preds = clf.predict(sys.argv[2:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))
print(json.dumps({"labels": [p.label for p in preds], "heavy": heavy}))
"""


def test_console_script_then_classifier_never_import_tensorflow(plain, labels_file, photos,
                                                               tmp_path):
    from PIL import Image

    script = os.path.join(os.path.dirname(sys.executable), "dlinfer")
    proc = subprocess.run([script, "spec", "set", plain, *IMAGENET, "--labels", labels_file],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tench" in proc.stdout
    files = []
    for name, pixels in photos.items():
        files.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(pixels).save(files[-1])
    # `dlinfer spec` itself: the CLI module, spec_tool and onnx, in a fresh interpreter
    copy = str(tmp_path / "copy.onnx")
    check = ("import sys; from dlinfer.tools import cli; "
             f"rc = cli.main(['spec', 'show', {plain!r}]) + cli.main(['spec', 'set', {plain!r}, "
             f"'--out', {copy!r}, '--color', 'BGR']); "
             "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()[-1]
    assert out == "0 False False"
    out = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, plain, *files],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["heavy"] == [] and set(result["labels"]) <= set(LABELS)
