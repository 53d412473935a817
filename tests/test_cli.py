"""The dlinfer command line, run as a user would, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from optional import cpu_providers


def dlinfer_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlinfer", *args], capture_output=True,
                          text=True, timeout=120, check=check)


def test_info_text(mnist_onnx):
    out = dlinfer_cli("info", mnist_onnx).stdout
    assert "images: float32[N, 28, 28, 1]" in out
    assert "probabilities: float32[N, 10]" in out
    assert cpu_providers()[0] in out  # the subprocess's default backend is ours
    assert "task:      classification" in out


def test_info_json_parses(mnist_onnx):
    info = json.loads(dlinfer_cli("info", mnist_onnx, "--json").stdout)
    assert info["providers"] == cpu_providers()
    assert info["inputs"] == [{"name": "images", "shape": [None, 28, 28, 1], "dtype": "float32"}]
    assert info["spec"]["labels"] == [str(i) for i in range(10)]
    assert info["spec"]["parity"]["argmax_agreement"] == 1.0  # onnxruntime vs its NumPy model


def test_predict_text_and_json(mnist_onnx, digit_pngs):
    paths, labels = digit_pngs
    text = dlinfer_cli("predict", mnist_onnx, *paths[:3], "--top-k", "2").stdout
    assert all(p in text for p in paths[:3])
    result = json.loads(dlinfer_cli("predict", mnist_onnx, *paths, "--json").stdout)
    assert [r["file"] for r in result] == paths
    assert all(0.0 <= r["probability"] <= 1.0 and r["label"] == str(r["index"]) for r in result)
    # the digit classifier gets ~90% of held-out digits right; chance would be 1 in 10
    assert sum(r["index"] == y for r, y in zip(result, labels)) >= 7


def test_errors_exit_with_a_message(tmp_path, mnist_onnx):
    """A failure while running: exit 1; a bad argument, caught at parse time: exit 2."""
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    proc = dlinfer_cli("predict", mnist_onnx, str(bad), check=False)
    assert proc.returncode == 1
    assert "bad.png: not an image" in proc.stderr and "Traceback" not in proc.stderr
    proc = dlinfer_cli("info", str(tmp_path / "missing.onnx"), check=False)
    assert proc.returncode == 2 and "argument model: no such file" in proc.stderr


def test_output_into_a_closed_pipe_ends_quietly(mnist_onnx):
    """`dlinfer info MODEL | head -0`: exit 141 as a shell tool on SIGPIPE, no error line."""
    proc = subprocess.Popen([sys.executable, "-m", "dlinfer", "info", mnist_onnx],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_info_lists_every_spec_input_and_output(tmp_path):
    import numpy as np
    from dlinfer.export.onnx_file import save, set_spec
    from dlinfer.spec import InputSpec, ModelSpec, OutputSpec
    from onnx_models import build_two_input

    z = np.zeros
    proto = build_two_input((None, 8, 8, 3), (None, 4), z((192, 3), np.float32),
                            z((4, 3), np.float32), z(3, np.float32), z((4, 4), np.float32))
    set_spec(proto, ModelSpec(
        name="two", task="classification",
        inputs=[InputSpec("image", (None, 8, 8, 3), color="RGB"),
                InputSpec("features", (None, 4), kind="features", layout="NC", color=None)],
        outputs=[OutputSpec("probabilities", labels=("a", "b", "c")),
                 OutputSpec("box", kind="value")]))
    save(proto, tmp_path / "two.onnx")
    out = dlinfer_cli("info", str(tmp_path / "two.onnx")).stdout
    assert "spec input: image: image float32(N, 8, 8, 3) NHWC RGB" in out
    assert "spec input: features: features float32(N, 4)" in out
    assert "spec output: probabilities: probabilities, labels a, b, c (3)" in out
    assert "spec output: box: value" in out
    info = json.loads(dlinfer_cli("info", str(tmp_path / "two.onnx"), "--json").stdout)
    assert [o["name"] for o in info["spec"]["outputs"]] == ["probabilities", "box"]


def test_info_shows_a_thousand_labels_as_ten_and_the_count(tmp_path):
    """A 1000-class model's text info fits a screen; --json keeps every label."""
    import numpy as np
    from dlinfer.spec import InputSpec, ModelSpec, OutputSpec
    from onnx_models import Dense, build_mlp, save

    w = np.zeros((4, 1000), np.float32)
    proto = build_mlp("wide", (None, 4), "probabilities",
                      [Dense(w, np.zeros(1000, np.float32), "softmax")])
    labels = tuple(f"class_{i}" for i in range(1000))
    path = save(proto, ModelSpec(
        name="wide", task="classification",
        inputs=[InputSpec("images", (None, 4), kind="features", layout="NC", color=None)],
        outputs=[OutputSpec("probabilities", labels=labels)]), str(tmp_path))
    out = dlinfer_cli("info", path).stdout
    assert "labels:    class_0, class_1, class_2, class_3, class_4, class_5, class_6, " \
           "class_7, class_8, class_9, ... (1000)\n" in out
    assert "class_999" not in out
    assert json.loads(dlinfer_cli("info", path, "--json").stdout)["spec"]["labels"] == list(labels)
