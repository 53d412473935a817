"""cuda= and tensorrt= options: checked by name and value, encoded, and handed to onnxruntime.

On CPU: every refusal names the option; the provider list dlinfer hands to
``InferenceSession`` carries the encoded options (the session is a recorder here, since
CUDA cannot load).  Marked `gpu`: onnxruntime reads them back from a real CUDA session.
"""

from __future__ import annotations

import dlinfer
import numpy as np
import onnxruntime as ort
import pytest
from device_checks import CUDA_USABLE, TENSORRT_USABLE, conv_classifier
from dlinfer.runtime import provider_options as po
from dlinfer.runtime import providers
from optional import onnxruntime_only, requires

CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def conv_path(tmp_path_factory) -> str:
    return conv_classifier(tmp_path_factory.mktemp("provider_options"), 20)


@pytest.mark.parametrize(
    "cuda, match",
    [
        ({"cudnn_conv_algo_serch": "HEURISTIC"}, "unknown cuda provider option "
                                                 "'cudnn_conv_algo_serch'"),
        ({"cudnn_conv_algo_search": "FASTEST"}, "'cudnn_conv_algo_search' must be one of "
                                                "EXHAUSTIVE, HEURISTIC, DEFAULT"),
        ({"gpu_mem_limit": -1}, "'gpu_mem_limit' must be >= 1, got -1"),
        ({"gpu_mem_limit": "2GB"}, "'gpu_mem_limit' must be an integer, got '2GB'"),
        ({"gpu_mem_limit": 1.5}, "'gpu_mem_limit' must be an integer"),
        ({"enable_cuda_graph": "maybe"}, "'enable_cuda_graph' must be true or false"),
        ({"arena_extend_strategy": "double"}, "kNextPowerOfTwo, kSameAsRequested"),
        ({"device_id": 1}, "device='cuda:N'"),
        (["gpu_mem_limit"], "cuda= must be a dict"),
    ],
    ids=["unknown", "choice", "negative", "text", "float", "bool", "arena", "device_id", "list"],
)
@onnxruntime_only("cuda= and tensorrt= provider options")
def test_bad_cuda_options_are_refused_by_name(conv_path, cuda, match):
    with pytest.raises(dlinfer.ProviderOptionsError, match=match):
        dlinfer.Model(conv_path, device="cuda", cuda=cuda)


@pytest.mark.parametrize(
    "tensorrt, match",
    [
        ({"trt_fp16": True}, "unknown tensorrt provider option 'trt_fp16'"),
        ({"trt_builder_optimization_level": 9}, "must be in 0..5, got 9"),
        ({"max_batch": 0}, "'max_batch' must be in 1..65536"),
        ({"trt_profile_max_shapes": "input 8x3"}, "must read 'input:1x28x28x1"),
    ],
    ids=["unknown", "level", "max_batch", "shapes"],
)
@onnxruntime_only("cuda= and tensorrt= provider options")
def test_bad_tensorrt_options_are_refused_by_name(conv_path, tensorrt, match):
    with pytest.raises(dlinfer.ProviderOptionsError, match=match):
        dlinfer.Model(conv_path, device="tensorrt", tensorrt=tensorrt)


@onnxruntime_only("cuda= and tensorrt= provider options")
def test_options_for_a_provider_the_device_does_not_use_are_refused(conv_path):
    with pytest.raises(dlinfer.ProviderOptionsError, match="device='cpu'"):
        dlinfer.Model(conv_path, device="cpu", cuda={"gpu_mem_limit": 2**30})
    with pytest.raises(dlinfer.ProviderOptionsError, match="use device='tensorrt'"):
        dlinfer.Model(conv_path, device="cuda", tensorrt={"trt_fp16_enable": True})
    assert isinstance(dlinfer.ProviderOptionsError("x"), ValueError)


def test_encoding_and_serving_defaults():
    assert po.cuda_options(None) == {"cudnn_conv_algo_search": "HEURISTIC"}
    assert po.cuda_options({"cudnn_conv_algo_search": "exhaustive", "enable_cuda_graph": True,
                            "gpu_mem_limit": "1024", "use_tf32": "off"}) == {
        "cudnn_conv_algo_search": "EXHAUSTIVE", "enable_cuda_graph": "1",
        "gpu_mem_limit": "1024", "use_tf32": "0"}
    trt = po.tensorrt_options({"trt_fp16_enable": True})
    assert trt["trt_fp16_enable"] == "True" and trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_timing_cache_path"] == trt["trt_engine_cache_path"] == po.default_cache_dir()


def test_max_batch_becomes_a_profile_from_the_models_inputs(conv_path, tmp_path):
    checked = po.for_device("tensorrt", conv_path, None,
                            {"max_batch": 32, "trt_engine_cache_path": tmp_path})
    trt = checked["tensorrt"]
    assert "max_batch" not in trt
    assert trt["trt_profile_min_shapes"] == "input:1x3x8x8"
    assert trt["trt_profile_opt_shapes"] == trt["trt_profile_max_shapes"] == "input:32x3x8x8"
    assert trt["trt_engine_cache_path"] == str(tmp_path)
    assert checked["cuda"] == {"cudnn_conv_algo_search": "HEURISTIC"}
    with pytest.raises(dlinfer.ProviderOptionsError,
                       match=r"input 'x' has shape \(None, 3, None\)"):
        po.tensorrt_profile({"max_batch": "4"}, [("x", [None, 3, None])])


@onnxruntime_only("cuda= and tensorrt= provider options")
def test_checked_options_reach_inference_session(conv_path, monkeypatch):
    """What dlinfer hands to onnxruntime, recorded where CUDA cannot load."""
    seen = []

    class Recorder:
        def __init__(self, path, sess_options=None, providers=None, **kwargs):
            seen.append(providers)
            raise RuntimeError("recorded")

    monkeypatch.setattr(providers, "provider_load_error", lambda provider=CUDA: None)
    monkeypatch.setattr(ort, "InferenceSession", Recorder)
    with pytest.raises(dlinfer.DlinferError):
        dlinfer.Model(conv_path, device="cuda:1",
                      cuda={"gpu_mem_limit": 2**30, "enable_cuda_graph": True})
    assert seen == [[(CUDA, {"device_id": 1, "cudnn_conv_algo_search": "HEURISTIC",
                             "gpu_mem_limit": str(2**30), "enable_cuda_graph": "1"}),
                     "CPUExecutionProvider"]]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_USABLE, reason="no usable CUDA execution provider here")
def test_cuda_options_read_back_from_the_session(conv_path):
    m = dlinfer.Model(conv_path, device="cuda",
                      cuda={"gpu_mem_limit": 2**30, "arena_extend_strategy": "kSameAsRequested"})
    got = m.session.get_provider_options()[CUDA]
    assert got["cudnn_conv_algo_search"] == "HEURISTIC"
    assert got["gpu_mem_limit"] == str(2**30)
    assert got["arena_extend_strategy"] == "kSameAsRequested"
    m.run(np.zeros((2, 3, 8, 8), np.float32))
    graph = dlinfer.Model(conv_path, device="cuda", cuda={"enable_cuda_graph": True})
    assert graph.session.get_provider_options()[CUDA]["enable_cuda_graph"] in ("1", "true", "True")


@pytest.mark.gpu
@pytest.mark.skipif(not TENSORRT_USABLE, reason="no usable TensorRT execution provider here")
def test_tensorrt_options_read_back_from_the_session(conv_path, tmp_path):
    m = dlinfer.Model(conv_path, device="tensorrt",
                      tensorrt={"max_batch": 8, "trt_engine_cache_path": tmp_path})
    got = m.session.get_provider_options()["TensorrtExecutionProvider"]
    assert got["trt_profile_max_shapes"] == "input:8x3x8x8"
    assert got["trt_engine_cache_path"] == str(tmp_path)
    for batch in (1, 5, 8):  # inside the profile: no new engine
        m.run(np.zeros((batch, 3, 8, 8), np.float32))


def test_cli_flags_are_checked_at_parse_time(conv_path, capsys):
    from dlinfer.tools import cli

    for argv, match in ((["--gpu-mem-limit", "-5"], "'gpu_mem_limit' must be >= 1"),
                        (["--cuda-conv-algo-search", "fastest"], "must be one of"),
                        (["--cuda-option", "gpu_mem_limt=5"], "unknown cuda provider option"),
                        (["--trt-option", "trt_fp16_enable"], "must read KEY=VALUE")):
        with pytest.raises(SystemExit) as exit_info:
            cli.build_parser().parse_args(["info", conv_path, *argv])
        assert exit_info.value.code == 2
        assert match in capsys.readouterr().err


def test_cli_flags_become_model_options(conv_path):
    from dlinfer.tools import cli
    from dlinfer.tools.provider_flags import provider_kwargs

    args = cli.build_parser().parse_args([
        "bench", conv_path, "--device", "cpu,tensorrt", "--cuda-conv-algo-search", "exhaustive",
        "--cuda-graph", "--gpu-mem-limit", "1024", "--trt-fp16", "--trt-max-batch", "16",
        "--trt-option", "trt_builder_optimization_level=2"])
    assert provider_kwargs(args) == {
        "cuda": {"cudnn_conv_algo_search": "exhaustive", "gpu_mem_limit": "1024",
                 "enable_cuda_graph": True},
        "tensorrt": {"max_batch": "16", "trt_fp16_enable": True,
                     "trt_builder_optimization_level": "2"}}
    none = cli.build_parser().parse_args(["serve", conv_path])
    assert provider_kwargs(none) == {}


@onnxruntime_only("cuda= and tensorrt= provider options")
def test_cli_refuses_gpu_flags_on_cpu(conv_path, capsys):
    from dlinfer.tools import cli

    assert cli.main(["info", conv_path, "--cuda-graph"]) != 0
    assert "cuda= options were given for device='cpu'" in capsys.readouterr().err


def test_bench_gives_gpu_options_to_gpu_devices_only(conv_path):
    results = dlinfer.benchmark(conv_path, "cpu", [1], cuda={"gpu_mem_limit": 2**30},
                                environment={}, iters=2, warmup=0)
    assert results.settings["cuda"] == {"gpu_mem_limit": 2**30}
    assert [r["provider"] for r in results] == ["CPUExecutionProvider"]


def test_serving_defaults_and_warm_up(conv_path):
    from dlinfer.runtime.warmup import serving_provider_options, warm_up, warm_up_for_batcher

    assert serving_provider_options("tensorrt", None, None, 32) == {"tensorrt": {"max_batch": 32}}
    own = {"trt_profile_max_shapes": "input:4x3x8x8"}
    assert serving_provider_options("tensorrt:1", None, own, 32) == {"tensorrt": own}
    assert serving_provider_options("cuda", {"use_tf32": False}, None, 8) == {
        "cuda": {"use_tf32": False}}
    model = dlinfer.Model(conv_path)
    assert warm_up(model, [1, 2, 5])["batch_sizes"] == [1, 2, 5]
    assert warm_up_for_batcher(model, 32) is None  # CPU chooses nothing per shape


@onnxruntime_only("cuda= and tensorrt= provider options")
@requires("starlette")
def test_serve_passes_provider_options_to_its_models(conv_path):
    from dlinfer.serving.server import ServeConfig, create_app

    config = ServeConfig(models=[conv_path], device="cpu", cuda={"gpu_mem_limit": 2**30})
    with pytest.raises(dlinfer.ProviderOptionsError, match="device='cpu'"):
        create_app(config)
