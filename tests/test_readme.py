"""The README's Python block runs as printed, on the files `make demo` leaves behind.

The default test lays out those files (``artifacts/mnist_cnn.onnx`` and
``artifacts/digits/test_NN.png``) with the runtime tests' digit classifier, which has the
demo model's contract (``images`` float32 (N, 28, 28, 1) GRAY, x / 255, labels 0-9), so
it runs without TensorFlow; the slow test runs the real demo first.  The block was
never run before, and used names it never defined.
"""

from __future__ import annotations

import pathlib
import re
import shutil

import numpy as np
import pytest
from optional import tensorflow
from PIL import Image

README = pathlib.Path(__file__).parent.parent / "README.md"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run_block(code: str, cwd: pathlib.Path, monkeypatch) -> dict:
    monkeypatch.chdir(cwd)
    scope: dict = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    return scope


def test_the_readme_has_one_python_block():
    assert len(readme_python_blocks()) == 1


def test_the_readme_python_block_runs_on_the_demo_files(mnist_onnx, mnist_digits, tmp_path,
                                                        monkeypatch, capsys):
    artifacts = tmp_path / "artifacts"
    (artifacts / "digits").mkdir(parents=True)
    shutil.copy(mnist_onnx, artifacts / "mnist_cnn.onnx")
    for i in range(10):  # as training/demo.py writes them
        Image.fromarray(mnist_digits.x_test[i]).save(artifacts / "digits" / f"test_{i:02d}.png")
    scope = run_block(readme_python_blocks()[0], tmp_path, monkeypatch)
    assert scope["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(scope["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    printed = capsys.readouterr().out.splitlines()
    assert printed[2] == "(2, 10)"


@pytest.mark.slow  # trains the demo's CNN for one epoch (about a minute)
@tensorflow
def test_the_readme_python_block_runs_after_the_real_demo(tmp_path, monkeypatch):
    from training import demo

    monkeypatch.chdir(tmp_path)
    assert demo.run(epochs=1, out="artifacts") in (0, 1)  # 1 epoch may miss the accuracy bar
    scope = run_block(readme_python_blocks()[0], tmp_path, monkeypatch)
    assert scope["probabilities"].shape == (2, 10)


@tensorflow  # training.demo imports the training code
def test_the_demo_speed_line_reads_right_whichever_side_wins():
    from training.demo import relative_speed

    assert relative_speed(2.0, 1.0) == "2.0x faster than Keras"
    assert relative_speed(1.0, 1.3) == "1.3x slower than Keras"  # was "(0.8x faster)"
    assert relative_speed(1.02, 1.0) == "as fast as Keras"  # not "1.0x faster"
    assert relative_speed(1.0, 1.04) == "as fast as Keras"
