"""`dlinfer export-triton`: config.pbtxt read back with Triton's own schema
(``tritonclient``'s ``model_config_pb2`` and ``google.protobuf.text_format``), labels, the
model file, the spec, and a baked normalization that changes no prediction."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import dlinfer
import numpy as np
import pytest
from optional import requires
from reference import assert_close

triton_schema = requires("tritonclient", "grpc", "google.protobuf")


def parse_config(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    with open(path) as f:
        return text_format.Parse(f.read(), mc.ModelConfig()), mc


@triton_schema
def test_config_pbtxt_parses_with_tritons_schema(mnist_onnx, tmp_path):
    from dlinfer.serving.triton import export_triton

    repo = export_triton(mnist_onnx, tmp_path / "repo", name="mnist",
                         preferred_batch_sizes=[16, 8], max_queue_delay_us=500, instances=2)
    assert repo.path == str(tmp_path / "repo" / "mnist")
    config, mc = parse_config(os.path.join(repo.path, "config.pbtxt"))
    assert config.name == "mnist" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32
    (inp,) = config.input
    assert (inp.name, inp.data_type, list(inp.dims), inp.format) == (
        "images", mc.TYPE_FP32, [28, 28, 1], mc.ModelInput.FORMAT_NHWC)
    (out,) = config.output
    assert (out.name, out.data_type, list(out.dims), out.label_filename) == (
        "probabilities", mc.TYPE_FP32, [10], "labels.txt")
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert (group.count, group.kind) == (2, mc.ModelInstanceGroup.KIND_CPU)

    clf = dlinfer.Classifier(mnist_onnx)
    with open(os.path.join(repo.path, "labels.txt")) as f:
        assert f.read().splitlines() == clf.labels == list(repo.labels)
    with open(repo.model_file, "rb") as a, open(mnist_onnx, "rb") as b:
        assert a.read() == b.read()
    with open(os.path.join(repo.path, "dlinfer_spec.json")) as f:
        assert dlinfer.ModelSpec.from_json(f.read()) == clf.spec


@triton_schema
@pytest.mark.parametrize("device, kind, gpus, accelerators", [
    ("cuda:1", "KIND_GPU", [1], []), ("tensorrt", "KIND_GPU", [0], ["tensorrt"])])
def test_gpu_instances_and_tensorrt(mnist_onnx, tmp_path, device, kind, gpus, accelerators):
    from dlinfer.serving.triton import export_triton

    repo = export_triton(mnist_onnx, tmp_path, device=device, max_batch_size=64)
    config, mc = parse_config(os.path.join(repo.path, "config.pbtxt"))
    (group,) = config.instance_group
    assert group.kind == getattr(mc.ModelInstanceGroup, kind) and list(group.gpus) == gpus
    assert config.max_batch_size == 64 and not config.dynamic_batching.preferred_batch_size
    got = [a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator]
    assert got == accelerators


def test_baked_normalization_changes_no_prediction(mnist_onnx, mnist_digits, tmp_path):
    import onnx
    import onnxruntime as ort
    from dlinfer.export.onnx_file import save, set_spec
    from dlinfer.serving.triton import export_triton

    # The digit model with a mean and std that are not 0 and 1, so the front does work.
    proto = onnx.load(mnist_onnx)
    spec = dlinfer.Model(mnist_onnx).spec
    normalized = dataclasses.replace(spec.input, mean=(0.1307,), std=(0.3081,))
    set_spec(proto, dlinfer.ModelSpec(spec.name, spec.task, inputs=[normalized],
                                      outputs=spec.outputs))
    source = tmp_path / "normalized.onnx"
    save(proto, source)

    repo = export_triton(source, tmp_path / "repo", bake_normalization=True)
    assert repo.baked and any("raw pixel values" in n for n in repo.notes)
    with open(os.path.join(repo.path, "dlinfer_spec.json")) as f:
        written = json.load(f)
    digits = mnist_digits.x_test[:32]
    # dlinfer on the baked file (its spec says: raw pixels) equals dlinfer on the source.
    want = dlinfer.Classifier(str(source)).predict_proba(digits)
    assert_close(dlinfer.Classifier(repo.model_file).predict_proba(digits), want, atol=1e-5,
                 context="baked vs source")
    # A plain client: raw pixel values as float, nothing else.
    session = ort.InferenceSession(repo.model_file, providers=["CPUExecutionProvider"])
    raw = session.run(None, {"images": digits[..., None].astype(np.float32)})[0]
    assert_close(raw, want, atol=1e-5, context="onnxruntime on raw pixels")
    assert written["extra"]["baked_normalization"]["mean"] == [0.1307]


def test_refusals_leave_the_repository_as_it_was(mnist_onnx, tmp_path):
    from dlinfer.serving.triton import export_triton

    repo = export_triton(mnist_onnx, tmp_path, name="m")
    before = sorted(os.listdir(repo.path))
    with pytest.raises(dlinfer.InputError, match="already exists"):
        export_triton(mnist_onnx, tmp_path, name="m")
    with pytest.raises(dlinfer.InputError, match="exceed max_batch_size 8"):
        export_triton(mnist_onnx, tmp_path, name="m", overwrite=True, max_batch_size=8,
                      preferred_batch_sizes=[16])
    with pytest.raises(dlinfer.InputError, match="device='auto'"):
        export_triton(mnist_onnx, tmp_path, name="m", overwrite=True, device="auto")
    assert sorted(os.listdir(repo.path)) == before
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no staging folders left behind
    export_triton(mnist_onnx, tmp_path, name="m", overwrite=True, instances=3)
    assert "count: 3" in open(os.path.join(repo.path, "config.pbtxt")).read()
    shutil.rmtree(repo.path)


def test_cli_export_triton(mnist_onnx, tmp_path, capsys):
    from dlinfer.tools.cli import main

    assert main(["export-triton", mnist_onnx, "--repo", str(tmp_path), "--name", "digits",
                 "--preferred-batch-sizes", "4,8", "--max-queue-delay-us", "100"]) == 0
    assert "wrote" in capsys.readouterr().out
    text = open(tmp_path / "digits" / "config.pbtxt").read()
    assert "preferred_batch_size: [ 4, 8 ]" in text and "max_queue_delay_microseconds: 100" in text
    with pytest.raises(SystemExit) as exit_:
        main(["export-triton", mnist_onnx, "--repo", str(tmp_path), "--name", "a/b"])
    assert exit_.value.code == 2


def _variant(source: str, folder, mode: str) -> str:
    """A copy of ``source`` whose spec says `dlinfer optimize --mode MODE` wrote it."""
    import onnx
    from dlinfer.export.onnx_file import set_spec

    proto = onnx.load(source)
    spec = dlinfer.Model(source).spec
    set_spec(proto, dataclasses.replace(spec, extra={**spec.extra, "optimize": {"mode": mode}}))
    path = str(folder / f"model_{mode}.onnx")
    onnx.save(proto, path)
    return path


def test_an_optimized_variant_gets_its_own_entry_and_the_cli_says_force(mnist_onnx, tmp_path,
                                                                       capsys):
    from dlinfer.serving.triton import export_triton
    from dlinfer.tools.cli import main

    int8 = _variant(mnist_onnx, tmp_path, "int8")
    plain = export_triton(mnist_onnx, tmp_path / "repo")
    variant = export_triton(int8, tmp_path / "repo")
    assert os.path.basename(variant.path) == os.path.basename(plain.path) + "_int8"
    assert main(["export-triton", int8, "--repo", str(tmp_path / "repo")]) == 1
    err = capsys.readouterr().err
    assert "already exists; pass --force to replace it" in err and "overwrite=True" not in err
    with pytest.raises(dlinfer.InputError, match=r"pass overwrite=True to replace it"):
        export_triton(int8, tmp_path / "repo")


def test_what_the_graph_cannot_do_is_named_for_clients(tmp_path):
    """A PaddleOCR-style pad-end input: Triton cannot resize or pad, so the notes and
    dlinfer_spec.json carry it; baked, the pad 0 after normalization becomes pixel 127.5."""
    import onnx
    from dlinfer.serving.triton import export_triton
    from dlinfer.tools.cli import main
    from onnx_models import ConvNet, build_plain_classifier

    rng = np.random.default_rng(7)
    net = ConvNet(*(rng.normal(0, 0.5, s).astype(np.float32) for s in
                    ((4, 3, 3, 3), (4,), (4, 2), (2,))))
    path = str(tmp_path / "cls.onnx")
    onnx.save(build_plain_classifier(net, 48, 192), path)
    assert main(["spec", "set", path, "--task", "classification", "--labels", "0,180",
                 "--color", "BGR", "--resize", "pad-end", "--mean", "0.5", "--std", "0.5",
                 "--pad-value", "0"]) == 0
    repo = export_triton(path, tmp_path / "repo")
    assert any("clients resize to 48x192 (pad-end (fit the height, pad the right), "
               "bilinear), BGR NCHW, pad 0 after normalization, then (x * 0.00392157 - 0.5) "
               "/ 0.5" in note for note in repo.notes), repo.notes
    written = json.load(open(os.path.join(repo.path, "dlinfer_spec.json")))
    assert written["inputs"][0]["resize"] == "pad-end" and "labels" not in written
    baked = export_triton(path, tmp_path / "repo", name="baked", bake_normalization=True)
    spec = dlinfer.Model(baked.model_file).spec.input
    assert (spec.pad_pixel, spec.pad_value, spec.scale) == (127.5, None, 1.0)
    crops = [rng.integers(0, 256, (30, 50, 3), np.uint8), rng.integers(0, 256, (20, 400, 3),
                                                                       np.uint8)]
    assert_close(dlinfer.Classifier(baked.model_file).predict_proba(crops),
                 dlinfer.Classifier(path).predict_proba(crops), atol=1e-5)
