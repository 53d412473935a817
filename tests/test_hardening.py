"""Issue 19, the Python API, CLI and spec side: every bad input from the adversarial sweep
gets its exact outcome (the HTTP side is tests/test_hardening_serve.py).

- the spec checked against the graph when a model opens (SpecError naming the field and
  the graph's value), and `dlinfer info` showing it;
- every CLI flag validated at parse time (argparse's error, exit 2), errors while running
  as one `dlinfer: error:` line with exit 1, a traceback only with --debug; a walk over
  the whole parser fails on any flag added without a validating converter;
- the Python API raising DlinferError subclasses that name the argument;
- the hang cases (a FIFO in a folder) run under a timeout and fail if it is hit.

Image bombs and long inputs: tests/test_hardening_images.py.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from dlinfer import Classifier, Model, preprocess, verify
from dlinfer.errors import (
    DlinferError,
    ImageDecodeError,
    InputError,
    InputShapeError,
    InputTypeError,
    SpecError,
)
from dlinfer.preprocessing.decode import decode_file, iter_image_files
from dlinfer.tools import args as arg
from dlinfer.tools import cli
from hardening_models import SEED
from hardening_models import with_raw_spec as _with_raw_spec
from onnx_models import Dense, build_mlp, checked_model
from PIL import Image

HANG_TIMEOUT_S = 60  # a command that blocks fails the test instead of hanging the run


# ---- models ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> str:
    return _with_raw_spec(tmp_path_factory.mktemp("hardening"), "digits", lambda raw: None)


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("png") / "digit.png")
    Image.fromarray(np.random.default_rng(SEED).integers(0, 256, (28, 28), np.uint8)).save(path)
    return path


def _set(where: str, key: str, value):
    def change(raw):
        raw[where][0][key] = value
    return change


def _binary(raw):
    raw["task"] = "binary_classification"
    raw["outputs"][0].update(labels=["no", "yes"], threshold=0.5)


# ---- 4. the spec against the graph -------------------------------------------------------

GRAPH_MISMATCHES = {
    "5-labels-for-10": (_set("outputs", "labels", list("abcde")),
                        "output 'probabilities' has 5 labels, but the graph's output "
                        "'probabilities' (N, 10) has 10 values per item"),
    "12-labels": (_set("outputs", "labels", list("abcdefghijkl")),
                  "has 12 labels, but the graph's output 'probabilities' (N, 10) has 10"),
    "32x32": (_set("inputs", "shape", [None, 32, 32, 1]),
              "input 'images' has shape (N, 32, 32, 1), but the graph's input 'images' "
              "(N, 28, 28, 1) float32 has size 28 on axis 1"),
    "rgb": (lambda raw: raw["inputs"][0].update(shape=[None, 28, 28, 3], color="RGB"),
            "has layout NHWC and color RGB (3 channel(s) on axis 3), but the graph's input "
            "'images' (N, 28, 28, 1) float32 has 1 there"),
    "nchw": (lambda raw: raw["inputs"][0].update(shape=[None, 1, 28, 28], layout="NCHW"),
             "has layout NCHW and color GRAY (1 channel(s) on axis 1), but the graph's input "
             "'images' (N, 28, 28, 1) float32 has 28 there"),
    "dtype": (_set("inputs", "dtype", "float16"),
              "has dtype float16, but the graph's input 'images' (N, 28, 28, 1) float32 "
              "takes float32"),
    "rank": (_set("inputs", "shape", [None, 28, 28]),
             "an image shape must have rank 4, got [None, 28, 28]"),
    "binary-of-10": (_binary, "is a binary head with a threshold (one sigmoid unit), but the "
                              "graph's output 'probabilities' (N, 10) has 10 values per item"),
    "threshold-x": (lambda raw: (_binary(raw), raw["outputs"][0].update(threshold="x")),
                    "threshold must be a number in [0, 1] (a probability), got 'x'"),
    "threshold-2": (lambda raw: (_binary(raw), raw["outputs"][0].update(threshold=2)),
                    "threshold must be a number in [0, 1] (a probability), got 2"),
    "std-1e-45": (_set("inputs", "std", [1e-45]), "|std| must be at least 2.94e-39, got 1e-45"),
    "std-1e-37": (lambda raw: raw["inputs"][0].update(std=[1e-37], scale=1),
                  "std 1e-37 with mean 0.0 and scale 1 maps pixels to 2.55e+39, beyond the "
                  "largest float32"),
    "std-zero": (_set("inputs", "std", [0]), "std values must be non-zero"),
    "std-text": (_set("inputs", "std", ["1"]), "std must be finite numbers, got ['1']"),
    "mean-nan": (_set("inputs", "mean", [float("nan")]), "mean must be finite numbers"),
    "scale-1e39": (_set("inputs", "scale", 1e39), "scale 1e+39 overflows float32"),
    "scale-inf": (_set("inputs", "scale", float("inf")), "scale must be finite numbers"),
    "labels-not-text": (_set("outputs", "labels", list(range(10))), "labels must be strings"),
}


@pytest.mark.parametrize("case", sorted(GRAPH_MISMATCHES))
def test_spec_contradicting_the_graph_is_refused_at_open(tmp_path, case, capsys):
    change, message = GRAPH_MISMATCHES[case]
    path = _with_raw_spec(tmp_path, case, change)
    for opener in (Model, Classifier):
        with pytest.raises(SpecError) as info:
            opener(path)
        assert message in str(info.value)
    # `dlinfer info` shows the problem: one line, exit 1, no traceback.
    assert cli.main(["info", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlinfer: error: ") and message in err and "Traceback" not in err


def test_spec_show_names_the_graph_problem_and_spec_set_fixes_it(tmp_path, capsys):
    pytest.importorskip("onnx")
    path = _with_raw_spec(tmp_path, "wrong", _set("inputs", "shape", [None, 32, 32, 1]))
    assert cli.main(["spec", "show", path]) == 0
    assert "problem:   " in capsys.readouterr().out
    assert cli.main(["spec", "set", path]) == 0  # the graph's shape wins, with a note
    assert "contradicted the graph's (N, 28, 28, 1)" in capsys.readouterr().err
    assert Classifier(path).preprocessing.size == (28, 28)
    broken = _with_raw_spec(tmp_path, "broken", _set("inputs", "std", [1e-45]))
    assert cli.main(["spec", "show", broken]) == 1
    assert "invalid: " in capsys.readouterr().out
    assert cli.main(["spec", "set", broken, "--task", "classification"]) == 0
    Classifier(broken)


def test_a_dynamic_output_width_is_checked_on_every_batch(tmp_path):
    # The output is the image flattened: its width (H * W) is known only when it runs.
    shape = onnx.numpy_helper.from_array(np.array([0, -1], np.int64), "flat")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Reshape", ["images", "flat"], ["probabilities"])], "flat",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT,
                                            ["N", "H", "W", 1])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT,
                                            ["N", "width"])], [shape])
    path = _with_raw_spec(tmp_path, "dynamic", lambda raw: (
        raw["inputs"][0].update(shape=[None, None, None, 1]),
        raw["outputs"][0].update(labels=list("abcde"))), checked_model(graph))
    clf = Classifier(path)  # nothing to check at open
    with pytest.raises(SpecError, match="gave 784 values per item, but the spec has 5 labels"):
        clf.predict(np.zeros((28, 28), np.uint8))


# ---- 5. the CLI: parse-time validation ----------------------------------------------------

# Each runs with {m} a real model file, so that only the flag is wrong.
FLAG_CASES = [
    "predict {m} {m} --top-k 0", "predict {m} {m} --threads -1", "predict {m} {m} --device tpu",
    "predict {m} {m} --batch-size 0", "predict {m} {m} --top-k 1.5",
    "bench {m} --iters 0", "bench {m} --duration nan", "bench {m} --batch-sizes 99999999",
    "bench {m} --device cpu,tpu", "bench {m} --input-shape 1x3xbig",
    "verify {m} {m} --samples -1", "verify {m} {m} --atol nan",
    "serve {m} --workers 0", "serve {m} --max-batch-size 0", "serve {m} --max-queue 0",
    "serve {m} --timeout-ms nan", "serve {m} --max-delay-ms inf", "serve {m} --max-delay-ms 1e13",
    "serve {m} --port 70000", "serve {m} --max-body-bytes 0",
    "export {m} --out x.onnx --samples 0",
    "spec set {m} --threshold x", "spec set {m} --std nan", "spec set {m} --size big",
    "info {m}.missing",
]


@pytest.mark.parametrize("case", FLAG_CASES)
def test_bad_flag_values_are_argparse_errors(digits, case, capsys):
    argv = case.format(m=digits).split()
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    flag = argv[-2] if argv[-2].startswith("--") else "model"
    assert f"error: argument {flag}" in err, err
    assert "Traceback" not in err


# Flags taking a value with neither a validating converter (tools/args.py) nor choices=,
# and why each may take any text.  The walk below fails on any flag missing from here,
# and on an entry here that no longer matches a flag.
FREE_TEXT = {
    ("dlinfer serve", "models"): "NAME=PATH: ServeConfig.resolved_names() checks each "
                                 "(exit 2) before anything loads",
    ("dlinfer serve", "host"): "any host name or address; the bind reports a bad one",
    ("dlinfer export", "labels"): "a file, a,b,c or NAME=...; read_labels refuses what it "
                                  "cannot read (SpecError, exit 1)",
    ("dlinfer spec set", "labels"): "as export --labels",
    ("dlinfer spec set", "input"): "an input name, checked against the graph (SpecError)",
    ("dlinfer spec set", "output"): "an output name, checked against the graph (SpecError)",
    ("dlinfer spec set", "name"): "the model's display name: any text is a name",
}


def _walk(parser: argparse.ArgumentParser):
    """(parser prog, action) for every action of every parser and subparser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _walk(child)
        else:
            yield parser.prog, action


def _unchecked(parser: argparse.ArgumentParser) -> tuple[list[str], set]:
    """Flags taking a value with no validating converter, no choices and no FREE_TEXT
    reason; and the (prog, dest) of every free-text flag seen."""
    unchecked, seen = [], set()
    for prog, action in _walk(parser):
        if action.nargs == 0 or isinstance(action, argparse._HelpAction):
            continue  # store_true/false/const, --help: no value to check
        if action.choices is not None or arg.is_validating(action.type):
            continue
        seen.add((prog, action.dest))
        if (prog, action.dest) not in FREE_TEXT:
            unchecked.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    return unchecked, seen


def test_every_flag_taking_a_value_has_a_validating_converter():
    unchecked, seen = _unchecked(cli.build_parser())
    assert not unchecked, ("these flags take a value without a converter from "
                           f"dlinfer/tools/args.py (or choices=): {unchecked}")
    stale = sorted(set(FREE_TEXT) - seen)
    assert not stale, f"FREE_TEXT names flags that no longer take free text: {stale}"


def test_the_walk_catches_a_flag_added_without_a_converter():
    parser = cli.build_parser()
    predict = next(a for a in parser._actions
                   if isinstance(a, argparse._SubParsersAction)).choices["predict"]
    predict.add_argument("--new-limit", type=int)
    predict.add_argument("--new-name")
    predict.add_argument("--new-checked", type=arg.positive_int)
    assert _unchecked(parser)[0] == ["dlinfer predict --new-limit", "dlinfer predict --new-name"]


def test_converters_refuse_and_accept():
    for convert, good, bad in [
        (arg.positive_int, "3", ["0", "-1", "x", "1.5", ""]),
        (arg.port, "65535", ["0", "70000"]),
        (arg.finite_float(0, 10), "1e-3", ["nan", "inf", "-1", "11", "x"]),
        (arg.positive_float(), "0.5", ["0", "-0.0"]),
        (arg.device, "cuda:1", ["tpu", "cpu:1", "cuda:x"]),
        (arg.devices, "cpu,cuda", ["cpu,tpu", ","]),
        (arg.batch_sizes(), "1,8", ["0", "99999999", ",", "1,x"]),
        (arg.threads, "0", ["-1", str(2**40)]),
        (arg.number, "1/255", ["1/0", "nan", "x"]),
        (arg.image_size, "28x32", ["0", "big", "1x2x3"]),
    ]:
        convert(good)
        for text in bad:
            with pytest.raises(argparse.ArgumentTypeError):
                convert(text)
    assert arg.image_size("224") == (224, 224) and arg.batch_sizes()("1, 8") == [1, 8]


# ---- 5. the CLI: errors while running -----------------------------------------------------

def test_errors_while_running_exit_1_without_traceback_unless_debug(digits, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert cli.main(["predict", digits, str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == f"dlinfer: error: {bad}: not an image file Pillow can read\n"
    assert cli.main(["predict", digits, str(bad), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith(f"dlinfer: error: {bad}: not an image file "
                                               "Pillow can read\n")
    assert cli.main(["--debug", "info", digits]) == 0  # --debug before the command too


def test_an_unexpected_error_is_one_line_with_its_type(digits, monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something dlinfer did not foresee")

    monkeypatch.setattr(cli, "_info", broken)
    assert cli.main(["info", digits]) == 1
    assert capsys.readouterr().err == ("dlinfer: error: RuntimeError: something dlinfer did "
                                       "not foresee (--debug shows the traceback)\n")


def test_predict_json_refuses_nan_rather_than_writing_invalid_json(png, tmp_path, capsys):
    layer = Dense(np.full((784, 10), np.nan, np.float32), np.zeros(10, np.float32), "softmax")
    proto = build_mlp("nan", (None, 28, 28, 1), "probabilities", [layer])
    path = _with_raw_spec(tmp_path, "nan", lambda raw: None, proto)
    assert cli.main(["predict", path, png, "--json"]) == 1
    err = capsys.readouterr().err
    assert err == ("dlinfer: error: the model's output holds NaN or infinity, which JSON "
                   "cannot carry; the model or its input is broken\n")


def test_verify_names_a_file_that_is_not_a_keras_model(digits, tmp_path, capsys):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"garbage")
    assert cli.main(["verify", str(garbage), digits, "--samples", "2"]) == 1
    err = capsys.readouterr().err
    assert "File not found" not in err and "Traceback" not in err
    assert f"cannot load {garbage} as a Keras model: it is neither a .keras (zip)" in err


def test_cli_in_a_subprocess_exit_statuses(digits, tmp_path):
    """As a user runs it: a parse error is 2, a failure while running 1, no traceback."""
    run = dict(capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    proc = subprocess.run([sys.executable, "-m", "dlinfer", "predict", digits, digits,
                           "--top-k", "0"], **run)
    assert proc.returncode == 2 and "argument --top-k: must be an integer >= 1, got '0'" in \
        proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "dlinfer", "predict", digits, digits], **run)
    assert proc.returncode == 1 and proc.stderr.startswith("dlinfer: error: ")
    assert "Traceback" not in proc.stderr


# ---- hangs: the folder walk takes regular files only --------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_fifo_named_like_an_image_does_not_block_predict(digits, png, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    os.mkfifo(folder / "x.png")
    (folder / "real.png").write_bytes(open(png, "rb").read())
    reported = []
    assert list(iter_image_files(str(folder), on_unreadable=reported.append)) == [
        str(folder / "real.png")]
    assert [str(e) for e in reported] == [f"{folder / 'x.png'}: not a regular file (a FIFO)"]
    # In a subprocess under a timeout: a blocked read fails the test instead of hanging it.
    proc = subprocess.run([sys.executable, "-m", "dlinfer", "predict", digits, str(folder),
                           "--json", "--no-progress"], capture_output=True, text=True,
                          timeout=HANG_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["file"] for line in proc.stdout.splitlines()] == ["real.png"]
    # Named directly, a FIFO is refused at parse time, and by the decoder.
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", digits, str(folder / "x.png")])
    assert info.value.code == 2
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        decode_file(folder / "x.png")


# ---- 6. the Python API ------------------------------------------------------------------

@pytest.fixture(scope="module")
def clf(digits) -> Classifier:
    return Classifier(digits, threads=1)


def _truncated_pil(tmp_path) -> Image.Image:
    data = io.BytesIO()
    noise = np.random.default_rng(SEED).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(data, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    return Image.open(path)  # opened, not loaded: the truncation shows on load


def _closed_pil(png) -> Image.Image:
    img = Image.open(png)
    img.close()
    return img


API_CASES = {
    "predict(None)": (lambda c, t, p: c.predict(None), InputTypeError, "got NoneType"),
    "predict(5)": (lambda c, t, p: c.predict(5), InputTypeError, "got int"),
    "predict(bytes)": (lambda c, t, p: c.predict(open(p, "rb").read()), InputTypeError,
                       "decode them with dlinfer.preprocessing.decode_bytes"),
    "[None]": (lambda c, t, p: c.predict([p, None]), InputTypeError, "image 1: an image must"),
    "[int]": (lambda c, t, p: c.predict([3]), InputTypeError, "got int"),
    "[dict]": (lambda c, t, p: c.predict([{}]), InputTypeError, "got dict"),
    "[bytes]": (lambda c, t, p: c.predict([b"\x89PNG"]), InputTypeError, "got bytes"),
    "[ragged]": (lambda c, t, p: c.predict([[[1, 2], [3]]]), InputTypeError, "got list"),
    "top_k=0": (lambda c, t, p: c.predict(p, top_k=0), InputError,
                "top_k must be an integer >= 1, got 0"),
    "top_k='3'": (lambda c, t, p: c.predict(p, top_k="3"), InputTypeError,
                  "top_k must be an integer, got '3' (str)"),
    "top_k=True": (lambda c, t, p: c.predict(p, top_k=True), InputTypeError, "top_k"),
    "batch_size=0": (lambda c, t, p: c.predict(p, batch_size=0), InputError, "batch_size"),
    "zero-size PIL": (lambda c, t, p: c.predict(Image.new("L", (0, 0))), InputShapeError,
                      "the image is empty (0x0 PIL image)"),
    "truncated PIL": (lambda c, t, p: c.predict(_truncated_pil(t)), ImageDecodeError,
                      "corrupt or truncated image"),
    "closed PIL": (lambda c, t, p: c.predict(_closed_pil(p)), ImageDecodeError,
                   "cannot read the PIL image"),
    "size='a'": (lambda c, t, p: preprocess(p, size="a"), InputTypeError,
                 "size must be an int or (height, width), got 'a'"),
    "size=0": (lambda c, t, p: preprocess(p, size=0), InputError, "size must be an integer >= 1"),
    "scale=1e39": (lambda c, t, p: preprocess(p, scale=1e39), InputError,
                   "scale 1e+39 overflows float32"),
    "std=1e-45": (lambda c, t, p: preprocess(p, std=1e-45), InputError,
                  "|std| must be at least"),
    "threads=2**40": (lambda c, t, p: preprocess(p, threads=2**40), InputError,
                      "threads must be an integer >= 0 and <= 4096"),
    "threads='2'": (lambda c, t, p: preprocess(p, threads="2"), InputTypeError, "threads"),
    "pad=nan": (lambda c, t, p: preprocess(p, pad=float("nan")), InputError, "pad"),
    "Classifier(threads=-1)": (lambda c, t, p: Classifier(c.model, threads=-1), InputError,
                               "threads must be an integer >= 0"),
    "Model(device='tpu')": (lambda c, t, p: Model(c.model.path, device="tpu"), InputError,
                            "device must be 'cpu', 'cuda'"),
    "verify(samples=-1)": (lambda c, t, p: verify(None, c.model.path, samples=-1), InputError,
                           "samples must be an integer >= 1, got -1"),
    "verify(atol=nan)": (lambda c, t, p: verify(None, c.model.path, atol=float("nan")),
                         InputError, "atol must be a finite number, got nan"),
    "predict_folder(top_k=0)": (lambda c, t, p: next(c.predict_folder(t, top_k=0)), InputError,
                                "top_k"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_python_api_raises_dlinfer_errors_naming_the_argument(clf, png, tmp_path, case):
    call, error, message = API_CASES[case]
    with pytest.raises(error) as info:
        call(clf, tmp_path, png)
    assert isinstance(info.value, DlinferError) and message in str(info.value)


def test_token_models_refuse_what_is_not_token_ids(tmp_path):
    weights = onnx.numpy_helper.from_array(np.ones((5, 2), np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Cast", ["ids"], ["f"], to=onnx.TensorProto.FLOAT),
         onnx.helper.make_node("MatMul", ["f", "w"], ["z"]),
         onnx.helper.make_node("Softmax", ["z"], ["probabilities"], axis=1)], "tokens",
        [onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["N", 5])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT,
                                            ["N", 2])], [weights])
    path = _with_raw_spec(tmp_path, "tokens", lambda raw: (
        raw["inputs"][0].update(name="ids", shape=[None, 5], dtype="int64", kind="tokens",
                                layout="NC", color=None, scale=1.0),
        raw["outputs"][0].update(labels=["neg", "pos"])), checked_model(graph))
    clf = Classifier(path)
    assert len(clf.predict([[1, 2, 3], [4]])) == 2
    for bad, error in [(None, InputTypeError), (b"ids", InputTypeError), ([[1, [2]]], InputError),
                       ([1.5, 2.5], InputError), ([-1], InputError)]:
        with pytest.raises(error):
            clf.predict(bad)


def test_the_built_in_classes_still_catch_them(clf):
    with pytest.raises(TypeError):  # InputTypeError is a TypeError too
        clf.predict(None)
    with pytest.raises(ValueError):
        clf.predict(np.zeros((28, 28), np.uint8), top_k=0)
