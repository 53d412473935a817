"""Each kind of zoo model trains on its offline data, exports and checks parity.

Epochs and data are cut to seconds; the full runs are in the README table.  The
network is disabled throughout, so an accidental download fails the test.
"""

from __future__ import annotations

import dataclasses
import json
import os

import dlinfer
import numpy as np
import pytest
from optional import HAVE_TENSORFLOW, tensorflow
from reference import assert_close
from zoo_models import no_network  # noqa: F401 - a fixture

if HAVE_TENSORFLOW:
    from training import data as datasets
    from training import zoo
    from training.train import TrainResult, train

ATOL = 1e-5
# The regression models output raw series values; co2 is ~350 ppm, where one float32
# ulp is 3.05e-5 and that is the measured diff.  So their bound is 1e-5 relative to
# the output's magnitude (the network itself computes in standardized units).
REL_TOL_REGRESSION = 1e-5
pytestmark = [tensorflow, pytest.mark.usefixtures("no_network")]
HAVE_DEBIAN_FASHION = HAVE_TENSORFLOW and all(
    os.path.isfile(os.path.join(datasets.DEBIAN_FASHION_DIR, f)) for f in datasets.FASHION_FILES
)


def _quiet(name, tmp_path, **kwargs) -> TrainResult:
    return train(name, out=str(tmp_path), verbose=0, log=lambda *_: None, **kwargs)


def _common_checks(r: TrainResult, metric: str, atol: float = ATOL) -> None:
    assert os.path.exists(r.keras_path) and os.path.exists(r.onnx_path)
    with open(r.report_path) as f:
        report = json.load(f)
    assert report["metric"] == metric
    assert report["keras_test_metric"] == pytest.approx(report["onnx_test_metric"], abs=1e-6)
    assert report["max_abs_diff"] <= atol
    assert max(report["batch_max_abs_diff"].values()) <= atol
    spec = dlinfer.Model(r.onnx_path).spec
    assert spec.parity["max_abs_diff"] == report["max_abs_diff"]


def test_timeseries_lstm_trains_on_sunspots_and_reports_persistence(tmp_path):
    r = _quiet("timeseries_lstm", tmp_path, epochs=3)
    _common_checks(r, "rmse", REL_TOL_REGRESSION * max(1.0, float(np.abs(r.split.y_test).max())))
    assert r.report["persistence_rmse"] > 0 and r.report["n_steps"] == 3
    assert r.keras_model.count_params() == 10_451
    value = dlinfer.Model(r.onnx_path).run(r.x_test[:4])
    assert value.shape == (4, 1)


def test_timeseries_mlp_trains_on_co2_with_a_longer_window(tmp_path):
    r = _quiet("timeseries_mlp", tmp_path, epochs=3, data="co2", n_steps=12)
    _common_checks(r, "rmse", REL_TOL_REGRESSION * float(np.abs(r.split.y_test).max()))
    spec = dlinfer.Model(r.onnx_path).spec
    assert spec.extra == {"series": "co2", "n_steps": 12}
    assert spec.input.kind == "series" and spec.input.shape == (None, 12)


def test_imdb_lstm_learns_the_generated_token_task(tmp_path, monkeypatch):
    small = dataclasses.replace(
        zoo.ZOO["imdb_lstm"], load=lambda data: datasets.synthetic_tokens(n=800, maxlen=40)
    )
    monkeypatch.setitem(zoo.ZOO, "imdb_lstm", small)
    r = _quiet("imdb_lstm", tmp_path, epochs=4, batch_size=16)
    _common_checks(r, "accuracy")
    # 160 held-out sequences: far above chance means the path really trains
    assert r.report["keras_test_accuracy"] >= 0.8
    assert r.report["threshold_agreement"] == 1.0
    spec = dlinfer.Model(r.onnx_path).spec
    assert spec.task == "binary_classification" and spec.labels == ("negative", "positive")

    # dlinfer.Classifier takes the id sequences themselves, unpadded and ragged,
    # and pads them as the training data was (zeros in front, last ids kept).
    clf = dlinfer.Classifier(r.onnx_path)
    x = r.x_test[:32]
    keras_p = r.keras_model.predict(x, verbose=0)[:, 0]
    ragged = [row[np.argmax(row != 0):].tolist() for row in x]
    ragged[0] = [7, 99, 123] * 20 + x[0].tolist()  # too long: only its last 40 ids count
    preds = clf.predict(ragged)
    assert [p.index for p in preds] == [int(p >= 0.5) for p in keras_p]
    assert {p.label for p in preds} <= {"negative", "positive"}
    assert_close(np.array([p.top[0].probability if p.index else 1 - p.probability
                           for p in preds]), np.asarray(keras_p, np.float64), atol=1e-5)
    np.testing.assert_array_equal(clf.preprocess(ragged), x)
    assert clf.predict(ragged[3])[0] == preds[3]  # one sequence on its own
    with pytest.raises(dlinfer.InputDtypeError, match="must be integers"):
        clf.predict([[1.5, 2.0]])
    with pytest.raises(dlinfer.InputError, match=">= 0"):
        clf.predict([[5, -1]])
    with pytest.raises(dlinfer.InputError, match="takes token ids"):
        list(clf.predict_folder(tmp_path))


def test_gan_1d_trains_and_reports_its_error(tmp_path):
    r = _quiet("gan_1d", tmp_path, epochs=100)
    _common_checks(r, "mean_abs_error")
    assert r.report["steps"] == 100
    assert "discriminator" in r.extras and r.extras["discriminator"].count_params() == 101


def test_dcgan_trains_on_digits_and_exports_the_generator(tmp_path, monkeypatch):
    tiny = datasets.load_mnist("mnist5k")
    tiny = dataclasses.replace(tiny, x_train=tiny.x_train[:192], x_test=tiny.x_test[:64])
    monkeypatch.setitem(zoo.ZOO, "dcgan_mnist",
                        dataclasses.replace(zoo.ZOO["dcgan_mnist"], load=lambda data: tiny))
    r = _quiet("dcgan_mnist", tmp_path, epochs=1, batch_size=64)
    _common_checks(r, "discriminator_accuracy")
    assert r.report["psnr_db"] >= 60
    assert r.extras["discriminator"].count_params() == 40_705
    grid = dlinfer.Generator(r.onnx_path).save_grid(tmp_path / "grid.png", n=4)
    assert grid.shape == (58, 58)


@pytest.mark.skipif(not HAVE_DEBIAN_FASHION, reason="needs Debian's dataset-fashion-mnist")
def test_small_convnet_trains_on_a_generated_folder_and_classifies_its_files(tmp_path):
    r = _quiet("small_convnet", tmp_path, epochs=1, image_size=48, samples=12)
    _common_checks(r, "accuracy")
    assert r.report["classes"] == ["ankle_boot", "sneaker"]
    clf = dlinfer.Classifier(r.onnx_path)
    assert clf.spec.task == "binary_classification" and clf.labels == ["ankle_boot", "sneaker"]
    folder = os.path.join(tmp_path, "fashion-images-48", "sneaker")
    files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))[:3]]
    keras_p = r.keras_model.predict_on_batch(dlinfer.Classifier(r.onnx_path).preprocess(files))
    preds = clf.predict(files)
    assert [p.index for p in preds] == [int(p >= 0.5) for p in keras_p[:, 0]]
    assert all(p.label in clf.labels for p in preds)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DEBIAN_FASHION, reason="needs Debian's dataset-fashion-mnist")
def test_vgg16_transfer_trains_both_stages_with_random_base_weights(tmp_path):
    r = _quiet("vgg16_transfer", tmp_path, epochs=1, image_size=32, samples=8,
               weights="none", fine_tune_epochs=1)
    _common_checks(r, "accuracy")
    assert r.report["weights"] == "none" and r.report["fine_tune_epochs"] == 1
    assert dlinfer.Model(r.onnx_path).spec.input.mean == pytest.approx(zoo.VGG_MEAN_RGB)


def test_train_cli_runs_offline(tmp_path, capsys):
    from training.cli import main

    assert main(["train", "gan_1d", "--epochs", "20", "--out", str(tmp_path)]) == 0
    assert os.path.exists(tmp_path / "gan_1d.onnx")
    assert "gan_1d.report.json" in capsys.readouterr().out


def test_train_cli_reports_missing_data_without_a_traceback(tmp_path, capsys, monkeypatch):
    from training._tf import keras
    from training.cli import main

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.datasets.imdb, "load_data", offline)
    assert main(["train", "imdb_lstm", "--data", "imdb", "--out", str(tmp_path)]) == 1
    assert "dlinfer: error: could not load IMDB" in capsys.readouterr().err


def test_list_shows_all_twelve_with_workshop_counts(capsys):
    from training.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    expected = {
        "mnist_mlp": "407,050", "mnist_mlp_dropout": "235,146", "mnist_cnn": "93,322",
        "fashion_mlp": "407,050", "fashion_cnn": "93,322", "small_convnet": "3,453,121",
        "vgg16_transfer": "14,714,688", "timeseries_mlp": "501", "timeseries_lstm": "10,451",
        "imdb_lstm": "328,353", "gan_1d": "122", "dcgan_mnist": "1,164,289",
    }
    lines = out.splitlines()
    for name, count in expected.items():
        i = next(i for i, ln in enumerate(lines) if ln.split()[:1] == [name])
        # the count is on the model's line, or (VGG16's base) on its note line below
        assert count in lines[i] + lines[i + 1], name
    assert len(zoo.ZOO) == 12


def test_unknown_model_and_data_fail_clearly(tmp_path):
    with pytest.raises(SystemExit, match="unknown model 'resnet'"):
        _quiet("resnet", tmp_path)
    with pytest.raises(SystemExit, match="--data must be one of"):
        _quiet("mnist_cnn", tmp_path, data="imagenet")


def test_train_optimize_int8_gates_on_the_held_out_split(tmp_path):
    """`python -m training train mnist_cnn --optimize int8`: one go, gated on the 1k split."""
    r = _quiet("mnist_cnn", tmp_path, epochs=1, optimize="int8")
    with open(r.report_path) as f:
        report = json.load(f)
    gated = report["optimize"]
    assert gated["passed"] and gated["mode"] == "int8"
    assert gated["evaluation"].startswith("1000 samples")
    assert abs(gated["drop_points"]) <= 0.5
    optimized = report["files"]["optimized"]
    assert optimized.endswith("mnist_cnn.int8.onnx") and os.path.exists(optimized)
    assert dlinfer.Model(optimized).spec.extra["optimize"]["mode"] == "int8"
    # The gate's data stays beside the model: the same gate replays without TensorFlow.
    from dlinfer.optimize import optimize

    replay = optimize(r.onnx_path, tmp_path / "replay.onnx", "int8",
                      calibrate=str(tmp_path / "mnist_cnn.calibration.npy"),
                      eval=str(tmp_path / "mnist_cnn.heldout.npz"))
    assert replay.metrics["accuracy"] == gated["metrics"]["accuracy"]


def test_train_optimize_int8_refuses_a_model_it_cannot_calibrate(tmp_path):
    with pytest.raises(dlinfer.OptimizeError, match="calibrates int8 on the image models"):
        _quiet("timeseries_mlp", tmp_path, epochs=1, optimize="int8")
    with open(tmp_path / "timeseries_mlp.report.json") as f:
        assert "image models" in json.load(f)["optimize"]["refused"]
    assert not (tmp_path / "timeseries_mlp.int8.onnx").exists()
