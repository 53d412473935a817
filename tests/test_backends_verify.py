"""`dlinfer verify --backend`: the runtime compared against dlinfer's reference executor
(docs/verify.md); onnxruntime unless one is named, whatever $DLINFER_BACKEND says."""

from __future__ import annotations

import json

import dlinfer
import pytest
from dlinfer.tools.cli import main
from optional import requires

openvino = requires("openvino")


@openvino
def test_verify_compares_the_backend_named(mnist_onnx, capsys):
    assert main(["verify", mnist_onnx, "--samples", "4", "--backend", "openvino", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["backend"] == "openvino" and cli["ok"]
    assert [c["name"] for c in cli["outputs"]] == ["reference vs openvino"]
    api = dlinfer.verify(None, mnist_onnx, samples=4, backend="openvino")
    assert cli == api.to_dict()


def test_verify_runs_onnxruntime_unless_asked(mnist_onnx, monkeypatch, capsys):
    monkeypatch.setenv("DLINFER_BACKEND", "openvino")  # Model's default elsewhere
    assert main(["verify", mnist_onnx, "--samples", "4"]) == 0
    assert "reference vs onnxruntime" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        main(["verify", mnist_onnx, "--backend", "tensorflow"])
    assert exit.value.code == 2
    assert "--backend: backend must be 'auto', 'onnxruntime' or" in capsys.readouterr().err
