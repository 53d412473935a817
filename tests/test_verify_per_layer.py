"""`dlinfer verify --per-layer` on models that are not a chain, and when dlinfer's own
executor cannot run the graph.

Each perturbation nudges one weight tensor of the ONNX file (its first slice, by
0.5; the weights here are ~0.1), far past verify's 1e-4 tolerance, and the report
must name the layer that holds it as the first to diverge, with every earlier
matched layer agreeing.
"""

from __future__ import annotations

import dlinfer
import numpy as np
import onnx
import pytest
from optional import HAVE_TENSORFLOW, tensorflow
from reference import seed_of

if HAVE_TENSORFLOW:
    from dlinfer.export import to_onnx
    from dlinfer.export.convert import _subgraph_nodes
    from dlinfer.verification.per_layer import _scopes
    from test_export_any_model import application, masked_series, transformer_block

    from training._tf import keras

    L = keras.layers

pytestmark = tensorflow


def _nudged(path: str, tmp_path, layer) -> str:
    """A copy of the ONNX file with one weight of ``layer`` (found by its name scope)
    moved by 0.5."""
    proto = onnx.load(path)
    used = {name for node in _subgraph_nodes(proto.graph) for name in node.input}
    weights = [t for t in proto.graph.initializer
               if t.name in used and id(layer) in _scopes(t.name, [layer])
               and t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 1]
    assert weights, f"no weight of {layer.name} found in {path}"
    array = onnx.numpy_helper.to_array(weights[0]).copy()
    # One slice (a conv's first output filter, a matrix's first row): a single element
    # can meet only zeros after a ReLU and change nothing.
    array[0] += 0.5
    weights[0].CopyFrom(onnx.numpy_helper.from_array(array, weights[0].name))
    out = str(tmp_path / f"nudged_{layer.name}.onnx")
    onnx.save(proto, out)
    return out


def _export(build, name: str, tmp_path):
    keras.utils.set_random_seed(seed_of(name))
    model = build()
    path = str(tmp_path / f"{name}.onnx")
    to_onnx(model, path)
    return model, path


def _assert_names(report, layer) -> None:
    bad = report.first_bad_layer
    assert not report.ok and bad is not None, report.format()
    assert bad.layer == layer.name, report.format()
    assert all(row.ok or row.comparison is None or row.fused
               for row in report.layers[: bad.index]), report.format()
    assert bad.onnxruntime is not None and not bad.onnxruntime.ok  # the export, not dlinfer


def residual_block():
    """Conv -> BN -> ReLU -> Conv -> BN, added to a 1x1 shortcut: two branches."""
    image = keras.Input((12, 12, 3))
    shortcut = L.BatchNormalization()(L.Conv2D(8, 1)(image))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(image)))
    x = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="branch_conv")(x))
    x = L.ReLU()(L.Add()([shortcut, x]))
    return keras.Model(image, L.Dense(4, activation="softmax")(L.GlobalAveragePooling2D()(x)),
                       name="residual")


def _randomize(model) -> None:
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.3, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))


def test_a_residual_model_verifies_layer_by_layer(tmp_path):
    model, path = _export(residual_block, "residual", tmp_path)
    report = dlinfer.verify(model, path, per_layer=True, samples=4)
    assert report.ok, report.format()
    kinds = {row.layer_type for row in report.layers if row.comparison is not None}
    assert {"Conv2D", "Add", "ReLU", "Dense"} <= kinds, report.format()


def test_a_nudged_weight_in_a_residual_branch_is_named(tmp_path):
    keras.utils.set_random_seed(seed_of("residual"))
    model = residual_block()
    _randomize(model)
    path = str(tmp_path / "residual.onnx")
    to_onnx(model, path)
    layer = model.get_layer("branch_conv")
    _assert_names(dlinfer.verify(model, _nudged(path, tmp_path, layer), per_layer=True,
                                 samples=4), layer)


@pytest.mark.slow
def test_a_nudged_weight_in_a_resnet50_residual_branch_is_named(tmp_path):
    model, path = _export(application("ResNet50", 32), "ResNet50", tmp_path)
    layer = model.get_layer("conv3_block2_2_conv")  # the 3x3 conv of a residual branch
    report = dlinfer.verify(model, _nudged(path, tmp_path, layer), per_layer=True, samples=2)
    _assert_names(report, layer)


def test_a_nudged_weight_in_a_recurrent_layer_is_named(tmp_path):
    model, path = _export(masked_series, "masked_series", tmp_path)
    layer = next(lay for lay in model.layers if isinstance(lay, L.LSTM))
    _assert_names(dlinfer.verify(model, _nudged(path, tmp_path, layer), per_layer=True,
                                 samples=4), layer)


def test_a_nudged_weight_in_an_attention_projection_is_named(tmp_path):
    model, path = _export(transformer_block, "transformer", tmp_path)
    attention = next(lay for lay in model.layers if isinstance(lay, L.MultiHeadAttention))
    report = dlinfer.verify(model, _nudged(path, tmp_path, attention._query_dense),
                            per_layer=True, samples=4)
    _assert_names(report, attention)  # its projections are part of its row


def test_verify_degrades_when_the_reference_executor_cannot_run_the_graph(
        tmp_path, monkeypatch, capsys):
    """No third opinion: Keras against onnxruntime still, per layer too, and the op named."""
    from dlinfer.tools.cli import main
    from dlinfer.verification import reference

    model, path = _export(residual_block, "residual", tmp_path)
    model.save(tmp_path / "residual.keras")
    monkeypatch.delitem(reference._OPS, "Conv")
    report = dlinfer.verify(model, path, per_layer=True, samples=4)
    assert report.ok, report.format()
    assert [c.name for c in report.outputs] == ["onnxruntime vs keras"]
    assert any("op 'Conv'" in n for n in report.notes), report.notes
    assert sum(row.comparison is not None for row in report.layers) >= 8
    # The exit status follows Keras vs onnxruntime: 0 here, 1 for a nudged weight.
    keras_file = str(tmp_path / "residual.keras")
    assert main(["verify", keras_file, path, "--per-layer"]) == 0
    printed = capsys.readouterr().out
    assert "note: reference executor skipped" in printed and "op 'Conv'" in printed
    nudged = _nudged(path, tmp_path, model.get_layer("branch_conv"))
    assert main(["verify", keras_file, nudged, "--per-layer"]) == 1
    assert "first diverging layer is" in capsys.readouterr().out
