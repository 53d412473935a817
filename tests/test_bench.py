"""`dlinfer bench`: documented JSON/CSV schema, a valid PNG, honest device labels.

No test asserts on how long anything took: the stop rule is checked with steps that
report made-up durations, and the records by their structure and invariants.
"""

from __future__ import annotations

import csv
import itertools
import json

import dlinfer
import numpy as np
import onnxruntime as ort
import pytest
from dlinfer.tools import bench, bench_results, cli
from dlinfer.tools.doctor import probe_provider
from optional import onnxruntime_only, requires, requires_tf

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CUDA_USABLE = "CUDAExecutionProvider" in ort.get_available_providers() and probe_provider(
    "CUDAExecutionProvider")["usable"]
TINY = dict(warmup=1, iters=3)


@pytest.fixture(scope="module")
def environment():
    return dlinfer.diagnose()


def run_cli(model: str, folder, *outputs: str) -> dict:
    """`dlinfer bench` on batch sizes 1 and 4, writing each of ``outputs`` (json, csv, png)."""
    paths = {k: folder / f"bench.{k}" for k in outputs}
    flags = {"json": "--json", "csv": "--csv", "png": "--plot"}
    args = [arg for k in outputs for arg in (flags[k], str(paths[k]))]
    code = cli.main(["bench", model, "--batch-sizes", "1,4", "--iters", "3", "--warmup", "1",
                     *args])
    assert code == 0
    return paths


@pytest.fixture(scope="module")
def cli_run(mnist_onnx, tmp_path_factory):
    return run_cli(mnist_onnx, tmp_path_factory.mktemp("bench"), "json", "csv")


def test_every_field_is_documented():
    doc = bench_results.__doc__
    for field in bench.FIELDS:
        assert f"\n``{field}``" in doc, f"{field} is missing from dlinfer.bench's field table"


def test_json_schema(cli_run):
    data = json.loads(cli_run["json"].read_text())
    assert data["schema"] == "dlinfer.bench/1"
    assert set(data) == {"schema", "created", "settings", "environment", "providers_ran",
                         "crossover", "records"}
    assert data["providers_ran"] == ["CPUExecutionProvider"]
    assert data["environment"]["providers"]["probes"]["CPUExecutionProvider"]["usable"]
    assert data["crossover"] == {}  # CPU only: nothing to cross
    records = data["records"]
    assert [(r["device"], r["batch_size"]) for r in records] == [("cpu", 1), ("cpu", 4)]
    for r in records:
        assert list(r) == bench.FIELDS
        assert r["provider"] == "CPUExecutionProvider" and r["method"] == "dlinfer"
        assert r["iters"] == 3 and r["stop"] == "iters"
        assert r["input_shape"] == f"{r['batch_size']}x28x28x1"
        assert 0 < r["latency_ms_min"] <= r["latency_ms_p50"] <= r["latency_ms_p90"] \
            <= r["latency_ms_p95"] <= r["latency_ms_p99"] <= r["latency_ms_max"]
        assert r["items_per_s"] == pytest.approx(r["batch_size"] / r["latency_ms_p50"] * 1000)
        assert r["compute_ms_p50"] == pytest.approx(r["latency_ms_p50"])
        assert r["h2d_ms_p50"] is None and r["d2h_ms_p50"] is None
        assert r["preprocess_ms_p50"] is None
        assert r["onnxruntime"] == ort.__version__


def test_csv_schema(cli_run):
    with open(cli_run["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    with open(cli_run["csv"], newline="") as f:
        assert next(csv.reader(f)) == bench.FIELDS
    assert len(rows) == 2
    assert [int(r["batch_size"]) for r in rows] == [1, 4]
    assert all(float(r["latency_ms_p99"]) > 0 and r["h2d_ms_p50"] == "" for r in rows)


@requires("matplotlib")
def test_plot_is_a_valid_png(mnist_onnx, tmp_path):
    from PIL import Image

    png = run_cli(mnist_onnx, tmp_path, "png")["png"]
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 200


@pytest.mark.skipif(CUDA_USABLE, reason="CUDA works here")
def test_bench_on_cuda_raises_with_onnxruntime_reason(mnist_onnx, environment):
    with pytest.raises(dlinfer.ProviderUnavailableError, match="needs CUDA") as info:
        dlinfer.benchmark(mnist_onnx, "cpu,cuda", [1], environment=environment, **TINY)
    assert "device='cuda:0'" in str(info.value)


def test_cli_bench_on_cuda_fails_with_reason(mnist_onnx, capsys):
    if CUDA_USABLE:
        pytest.skip("CUDA works here")
    assert cli.main(["bench", mnist_onnx, "--device", "cuda", "--iters", "1"]) == 1
    assert "needs CUDA" in capsys.readouterr().err


@pytest.mark.skipif(CUDA_USABLE, reason="CUDA works here")
def test_auto_runs_on_cpu_and_says_so(mnist_onnx, environment):
    results = dlinfer.benchmark(mnist_onnx, ["auto"], [2], environment=environment, **TINY)
    (r,) = results
    assert r["device"] == "auto" and r["provider"] == "CPUExecutionProvider"
    assert results.providers_ran == ["CPUExecutionProvider"]


RULE = dict(warmup=1, iters=None, duration=None, min_windows=3)


def test_stability_rule_stops_once_window_medians_agree():
    # Every call "takes" 5 ms: the medians never change, so the rule stops at min_windows.
    run = bench._measure(lambda: (None, None, 5_000_000, None), stability_pct=1.0,
                         max_seconds=600, **RULE)
    assert (run["stop"], run["windows"], run["median_change_pct"]) == ("stable", 3, 0.0)
    assert len(run["samples"]) >= 3 * 3  # at least 3 calls per window


def test_time_cap_stops_a_run_that_never_settles():
    # Every call "takes" 1 ns longer than the last: window medians keep moving, so only
    # max_seconds ends the run, and only after it has passed.
    durations = itertools.count(1_000)
    run = bench._measure(lambda: (None, None, next(durations), None), stability_pct=1e-9,
                         max_seconds=0.2, **RULE)
    assert run["stop"] == "time_cap" and run["seconds"] >= 0.2
    assert run["median_change_pct"] is None or run["median_change_pct"] > 1e-9


def test_benchmark_records_the_stability_rule(mnist_onnx, environment):
    # Any change counts as stable at this threshold, so the stop is decided by min_windows.
    (stable,) = dlinfer.benchmark(mnist_onnx, "cpu", [1], warmup=1, stability_pct=1e300,
                                  max_seconds=600, environment=environment)
    assert stable["stop"] == "stable" and stable["windows"] == 3
    assert stable["stability_pct"] == 1e300 and stable["median_change_pct"] >= 0
    assert stable["iters"] >= 3 * 3


def test_io_binding_and_end_to_end_split(mnist_onnx, environment):
    results = dlinfer.benchmark(mnist_onnx, "cpu", [2], io_binding=True, end_to_end=True,
                                environment=environment, **TINY)
    (r,) = results
    assert r["io_binding"] and r["end_to_end"] and r["input_shape"] == "2x28x28x1"
    assert r["preprocess_ms_p50"] > 0 and r["compute_ms_p50"] > 0
    assert r["h2d_ms_p50"] is None  # no device copies on CPU


@onnxruntime_only("IO binding's staged CUDA path")
def test_staged_io_binding_path_on_cpu_buffers(mnist_onnx):
    """The CUDA split's code path (device OrtValues, bound outputs, copy back) on CPU."""
    model = dlinfer.Model(mnist_onnx)
    x = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    step = bench._staged_step(model, x, True, device_type="cpu")
    stages = step()
    assert len(stages) == 4 and all(s is not None and s >= 0 for s in stages)


@requires_tf
def test_compare_keras_adds_baselines_and_ratios(digit_classifier, environment, tmp_path):
    from dlinfer.export._tf import import_tensorflow

    keras, _ = import_tensorflow()
    # The same model in Keras: the digit classifier's weights in a Dense softmax layer.
    (layer,) = digit_classifier.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.layers[-1].set_weights([layer.w, layer.b])
    keras_path = tmp_path / "mnist_linear.keras"
    model.save(keras_path)
    results = dlinfer.benchmark(digit_classifier.onnx_path, "cpu", [1],
                                compare_keras=keras_path, environment=environment, **TINY)
    methods = [r["method"] for r in results]
    assert methods == ["dlinfer", "keras.predict_on_batch", "keras.tf_function"]
    mine, predict, function = results
    assert predict["provider"] == "tensorflow" and predict["device"] in ("cpu", "gpu")
    assert mine["speedup_vs_keras_predict_on_batch"] == pytest.approx(
        predict["latency_ms_p50"] / mine["latency_ms_p50"])
    assert mine["speedup_vs_keras_tf_function"] == pytest.approx(
        function["latency_ms_p50"] / mine["latency_ms_p50"])


def _fake(device: str, provider: str, batch: int, p50: float) -> dict:
    r = dict.fromkeys(bench.FIELDS)
    r.update(model="m.onnx", model_name="m", method="dlinfer", device=device, provider=provider,
             providers=provider, batch_size=batch, io_binding=False, latency_ms_p50=p50,
             latency_ms_p90=p50 * 1.1, latency_ms_p99=p50 * 1.3, items_per_s=batch / p50 * 1e3,
             stop="stable", onnxruntime=ort.__version__, cpu="cpu", gpu="Fake GPU")
    return r


def crossover_rows() -> list[dict]:
    """CPU records slower than CUDA's from batch 8 on."""
    rows = [_fake("cpu", "CPUExecutionProvider", b, 0.1 * b) for b in (1, 8, 32)]
    return rows + [_fake("cuda:0", "CUDAExecutionProvider", b, 0.5 + 0.01 * b) for b in (1, 8, 32)]


def test_crossover():
    rows = crossover_rows()
    results = bench.BenchResults(rows, {}, {})
    assert results.crossover() == {"dlinfer": {
        "batch_size": 8, "gpu_provider": "CUDAExecutionProvider",
        "compared_batch_sizes": [1, 8, 32],
    }}
    assert "CUDA beats CPU from batch 8" in results.table()
    slow_gpu = [_fake("cuda:0", "CUDAExecutionProvider", 1, 5.0)]
    never = bench.BenchResults(rows[:3] + slow_gpu, {}, {})
    assert never.crossover()["dlinfer"]["batch_size"] is None


@requires("matplotlib")
def test_crossover_plot(tmp_path):
    path = tmp_path / "cross.png"
    bench.BenchResults(crossover_rows(), {}, {}).plot(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_sizes="1,0"), "batch_sizes"),
        (dict(iters=3, duration=1.0), "not both"),
        (dict(devices="gpu"), "device must be"),
        (dict(compare_keras="/nonexistent.keras"), "not found"),
    ],
    ids=["zero-batch", "iters-and-duration", "bad-device", "missing-keras"],
)
def test_bad_arguments(mnist_onnx, environment, kwargs, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        dlinfer.benchmark(mnist_onnx, environment=environment, **kwargs)


def test_end_to_end_needs_an_image_spec(tmp_path, environment):
    from dlinfer.tools.doctor import probe_model_bytes

    path = tmp_path / "relu.onnx"
    path.write_bytes(probe_model_bytes())
    with pytest.raises(dlinfer.SpecError, match="end-to-end"):
        dlinfer.benchmark(path, "cpu", [1], end_to_end=True, environment=environment, **TINY)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_USABLE, reason="no usable CUDA execution provider here")
def test_cuda_split_and_crossover(mnist_onnx, environment, tmp_path):
    results = dlinfer.benchmark(mnist_onnx, "cpu,cuda", [1, 64], io_binding=True,
                                environment=environment, **TINY)
    gpu_rows = [r for r in results if r["device"] == "cuda:0"]
    assert [r["provider"] for r in gpu_rows] == ["CUDAExecutionProvider"] * 2
    for r in gpu_rows:
        assert r["h2d_ms_p50"] > 0 and r["compute_ms_p50"] > 0 and r["d2h_ms_p50"] > 0
    assert "dlinfer" in results.crossover()
    results.plot(tmp_path / "gpu.png")
    assert (tmp_path / "gpu.png").read_bytes()[:8] == PNG_SIGNATURE


def test_a_model_without_a_batch_axis_runs_whole_at_batch_1(tmp_path, environment):
    from dlinfer.tools.doctor import probe_model_bytes

    path = tmp_path / "relu4.onnx"
    path.write_bytes(probe_model_bytes(4))  # input float32[4]: no batch axis to vary
    # Axis 0 (fixed at 4) is not a batch: the input is fed whole, as batch 1.
    with pytest.raises(dlinfer.InputShapeError, match="no input has a known batch axis"):
        dlinfer.benchmark(path, "cpu", [4], environment=environment, **TINY)
    results = dlinfer.benchmark(path, "cpu", [1, 4], environment=environment, **TINY)
    (r,) = results
    assert r["input_shape"] == "4" and r["model_name"] == "relu4" and r["batch_size"] == 1
    assert "batch sizes [4] skipped" in results.settings["batch_note"]


@pytest.fixture
def dynamic_size_cnn(tmp_path) -> str:
    """An NCHW classifier with a dynamic height and width, as a PyTorch export has."""
    import onnx
    from onnx_models import ConvNet, build_plain_classifier

    rng = np.random.default_rng(7)
    net = ConvNet(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
                  np.zeros(4, np.float32), rng.normal(0, 1, (4, 2)).astype(np.float32),
                  np.zeros(2, np.float32))
    path = str(tmp_path / "dynamic_hw.onnx")
    onnx.save(build_plain_classifier(net), path)
    return path


def test_text_output_names_the_shapes_timed_and_input_shape_sets_them(dynamic_size_cnn,
                                                                       capsys):
    args = ["bench", dynamic_size_cnn, "--batch-sizes", "1,2", "--iters", "2", "--warmup", "0"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert ("input shapes timed: 1x3x32x32, 2x3x32x32 (dynamic sizes drawn, not the model's: "
            "input axes 2, 3; set them with --input-shape NAME=SHAPE)") in out, out
    # the batch axis follows --batch-sizes, whatever the shape says there
    assert cli.main([*args, "--input-shape", "input=1x3x48x64", "--json", "-"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert [r["input_shape"] for r in records] == ["1x3x48x64", "2x3x48x64"]
    assert cli.main([*args, "--input-shape", "1x3x48x64"]) == 0  # one input: no name needed
    out = capsys.readouterr().out
    assert "input shapes timed: 1x3x48x64, 2x3x48x64\n" in out, out


@pytest.mark.parametrize("shape, match", [
    ({"pixels": (1, 3, 8, 8)}, r"no input of that name; its inputs are \['input'\]"),
    ({None: (1, 3, 8)}, r"the input has rank 4: \(batch, 3, height, width\)"),
    ({None: (1, 1, 8, 8)}, r"axis 1 is fixed at 3"),
], ids=["name", "rank", "fixed-axis"])
def test_input_shape_that_contradicts_the_graph_is_refused(dynamic_size_cnn, environment,
                                                           shape, match):
    with pytest.raises(dlinfer.InputShapeError, match=match):
        dlinfer.benchmark(dynamic_size_cnn, "cpu", [1], input_shapes=shape,
                          environment=environment, **TINY)
