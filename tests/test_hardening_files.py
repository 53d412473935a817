"""Issue 28, hostile model files and real folders: each case with its exact typed error or
exact output.

- the spec's JSON parsed within a depth and size limit, and metadata that is not UTF-8,
  as SpecError (never RecursionError or UnicodeDecodeError);
- shapes from the file checked against this machine's memory before allocating
  (InputShapeError, never MemoryError), in bench, the input batch and random samples;
- labels and file names escaped in text output, raw in JSON and CSV, where a name's
  bytes that are not UTF-8 read as \\xNN in every format; --csv whole or not at all,
  and --csv - on stdout;
- a pickled .npz as data: InputError, like a pickled .npy;
- the folder walk skipping and reporting what it cannot read (skip mode), or raising
  ImageDecodeError naming the path (raise mode);
- PIL images turned upright by their EXIF orientation, as paths are;
- the exit-status rule (docs/errors.md) and bench --plot naming its file.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys

import numpy as np
import onnx
import pytest
from dlinfer import Classifier, Model, checks
from dlinfer.errors import ImageDecodeError, InputError, InputShapeError, SpecError
from dlinfer.escape import file_name, visible
from dlinfer.json_limits import json_depth, loads_limited
from dlinfer.preprocessing.decode import decode_file, from_pil, iter_image_files
from dlinfer.spec import METADATA_KEY, InputSpec, ModelSpec
from dlinfer.tools import cli
from dlinfer.verification.samples import load_samples, random_samples, read_arrays
from onnx import TensorProto, helper
from onnx_models import Dense, build_mlp, checked_model, digit_spec
from optional import requires
from PIL import Image

SEED = 28
DEEP = 100_000
# check_allocation compares with this machine's memory; the tests fix it, so that the
# messages are exact on any machine.
MEMORY = 16 * 2**30


@pytest.fixture(autouse=True)
def sixteen_gib(monkeypatch):
    monkeypatch.setattr(checks, "memory_bytes", lambda: MEMORY)


# ---- models ---------------------------------------------------------------------------

def _digits_proto(bias_one: float = 0.0) -> onnx.ModelProto:
    """28x28 GRAY -> 10 softmax with zero weights: every image gets the same answer, class
    1 first when ``bias_one`` > 0 (softmax of [0, b, 0, ...])."""
    bias = np.zeros(10, np.float32)
    bias[1] = bias_one
    layer = Dense(np.zeros((784, 10), np.float32), bias, "softmax")
    return build_mlp("digits", (None, 28, 28, 1), "probabilities", [layer])


def _save(folder, name: str, spec_json: str, proto: onnx.ModelProto | None = None) -> str:
    """``proto`` (default: digits) with ``spec_json`` as its spec, as ``folder/name.onnx``."""
    proto = proto or _digits_proto()
    proto.metadata_props.add(key=METADATA_KEY, value=spec_json)
    path = os.path.join(folder, f"{name}.onnx")
    onnx.save(proto, path)
    return path


def _spec(labels=None) -> dict:
    raw = json.loads(digit_spec("digits", {}, {}).to_json())
    if labels is not None:
        raw["outputs"][0]["labels"] = labels
    return raw


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> str:
    return _save(tmp_path_factory.mktemp("digits"), "digits", json.dumps(_spec()))


def _png(path, value: int = 0) -> None:
    Image.fromarray(np.full((28, 28), value, np.uint8)).save(path, format="PNG")


# ---- the spec's JSON: depth, size, UTF-8 ------------------------------------------------

def _deep_whole() -> str:
    return "[" * DEEP + "]" * DEEP


def _deep_field() -> str:
    raw = _spec()
    raw["extra"] = {"x": "HOLE"}
    return json.dumps(raw).replace('"HOLE"', "[" * DEEP + "]" * DEEP)


@pytest.mark.parametrize(("make", "depth"), [(_deep_whole, DEEP), (_deep_field, DEEP + 2)],
                         ids=["whole", "one-field"])
def test_a_spec_nested_100k_deep_is_a_spec_error(tmp_path, capsys, make, depth):
    path = _save(tmp_path, "deep", make())
    message = f"dlinfer.spec nests {depth:,} levels deep, over the limit of 64"
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        Model(path)
    assert cli.main(["info", path]) == 1
    assert capsys.readouterr().err == f"dlinfer: error: {message}\n"


def test_session_metadata_nested_100k_deep_is_ignored_like_any_unreadable_entry(tmp_path):
    """dlinfer.session only ever switches optimizers off: unreadable, the model runs as is."""
    proto = _digits_proto()
    proto.metadata_props.add(key="dlinfer.session", value=_deep_whole())
    path = _save(tmp_path, "deep-session", json.dumps(_spec()), proto)
    assert Model(path).run(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)


def test_json_limits_refuse_size_and_bad_json_and_ignore_brackets_in_strings():
    with pytest.raises(SpecError, match=r"^spec is 10 bytes, over the limit of 4$"):
        loads_limited('{"a": [1]}', what="spec", error=SpecError, max_bytes=4)
    with pytest.raises(SpecError, match=r"^spec is not valid JSON: Expecting value: line 1 "
                                        r"column 7 \(char 6\)$"):
        loads_limited('{"a": }', what="spec", error=SpecError)
    assert json_depth('["[[[[", {"k": "}}]]"}]') == 2
    assert json_depth(r'["\\\\\"[[", [1]]') == 2  # escaped backslashes, then a quote
    assert loads_limited("[" * 64 + "]" * 64, what="x", error=SpecError) is not None
    with pytest.raises(SpecError, match=r"^x nests 65 levels deep, over the limit of 64$"):
        loads_limited("[" * 65 + "]" * 65, what="x", error=SpecError)
    assert json_depth("3") == 0
    assert loads_limited('{"a": ["[[["]}', what="x", error=SpecError) == {"a": ["[[["]}


def test_a_bad_utf8_byte_in_the_metadata_is_a_spec_error(tmp_path, capsys):
    text = json.dumps(_spec()).encode()
    at = text.index(b'"digits"') + 4
    bad = text[:at] + b"\xff" + text[at + 1:]
    path = _save_bad_bytes(tmp_path, bad)
    message = (f"{path}: the model's metadata is not valid UTF-8 (invalid start byte at "
               f"byte {at} of a value)")
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        Model(path)
    assert cli.main(["info", path]) == 1
    assert capsys.readouterr().err == f"dlinfer: error: {message}\n"
    # The spec read from the file by onnx (dlinfer spec, export) arrives as bytes:
    with pytest.raises(SpecError, match=f"^dlinfer.spec is not valid UTF-8 \\(invalid start "
                                        f"byte at byte {at}\\)$"):
        ModelSpec.from_json(bad)


def _save_bad_bytes(folder, value: bytes) -> str:
    """The digits model whose spec value is ``value`` byte for byte: serialized with a
    valid placeholder of the same length, then the bytes swapped in."""
    proto = _digits_proto()
    placeholder = "x" * len(value)
    proto.metadata_props.add(key=METADATA_KEY, value=placeholder)
    data = proto.SerializeToString().replace(placeholder.encode(), value)
    path = os.path.join(folder, "bad-utf8.onnx")
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---- shapes from the file: checked before allocating ------------------------------------

def _wide_features_model(folder) -> str:
    """(N, 2**40) float32 -> its maximum: a valid graph no machine can feed."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["x"], ["y"], keepdims=1, axes=[1])], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2**40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = os.path.join(folder, "wide.onnx")
    onnx.save(model, path)
    return path


def test_bench_refuses_an_input_dimension_of_2_to_the_40_before_allocating(tmp_path, capsys):
    path = _wide_features_model(tmp_path)
    assert cli.main(["bench", path, "--batch-sizes", "1", "--iters", "1"]) == 1
    assert capsys.readouterr().err == (
        "dlinfer: error: input 'x': an array of shape (1, 1099511627776) needs 8.0 TiB, more "
        "than this machine's memory (16.0 GiB); the model file asks for that size\n")


def test_random_samples_refuse_a_shape_past_memory():
    spec = InputSpec(name="x", shape=(None, 2**40), kind="features", layout="NC", color=None)
    with pytest.raises(InputShapeError, match=re.escape(
            "input 'x': an array of shape (16, 1099511627776) needs 128.0 TiB, more than this "
            "machine's memory (16.0 GiB)")):
        random_samples([spec], 16, SEED)


def test_the_input_batch_of_a_huge_image_model_is_refused_before_allocating(tmp_path):
    """65536 per side passes preprocessing's size rule; 64 of them do not fit in memory."""
    side = 65_536
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["images"], ["m"], keepdims=0, axes=[1, 2, 3]),
         helper.make_node("Unsqueeze", ["m", "axes"], ["m1"]),
         # two classes: a classification head of one unit is refused (spec_graph)
         helper.make_node("Concat", ["m1", "m1"], ["probabilities"], axis=1)], "huge",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", side, side, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")])
    spec = json.loads(digit_spec("huge", {}, {}).to_json())
    spec["inputs"][0]["shape"] = [None, side, side, 1]
    spec["outputs"][0]["labels"] = ["one", "two"]
    path = _save(tmp_path, "huge", json.dumps(spec), checked_model(graph))
    folder = tmp_path / "images"
    folder.mkdir()
    with pytest.raises(InputShapeError, match=re.escape(
            "the input batch: an array of shape (64, 65536, 65536, 1) needs 1.0 TiB, more "
            "than this machine's memory (16.0 GiB)")):
        list(Classifier(path).predict_folder(folder, progress=False))


def test_a_shape_whose_int64_product_overflows_is_still_refused():
    with pytest.raises(InputShapeError, match=r"shape \(4611686018427387904, 4, 1\) needs "):
        checks.check_allocation((2**62, 4, 1), 4, "x")
    assert checks.check_allocation([2, 3], 4, "x") == (2, 3)


# ---- labels with control characters ---------------------------------------------------

HOSTILE_LABELS = ["\x1b[2Jzero", "one\nfile.png  9 1.0000", *map(str, range(2, 10))]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("hostile")
    return _save(folder, "hostile", json.dumps(_spec(HOSTILE_LABELS)), _digits_proto(1.0))


def test_labels_are_escaped_in_text_and_raw_in_json(hostile, tmp_path, capsys):
    image = tmp_path / "x.png"
    _png(image)
    assert cli.main(["predict", hostile, str(image), "--top-k", "2"]) == 0
    # softmax([0, 1, 0, ...]): e / (e + 9) and 1 / (e + 9)
    assert capsys.readouterr().out == (
        f"{image}  one\\nfile.png  9 1.0000 0.2320  \\x1b[2Jzero 0.0853\n")
    assert cli.main(["predict", hostile, str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] == HOSTILE_LABELS[1]
    assert cli.main(["info", hostile]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\nfile.png" not in out
    assert ("labels:    \\x1b[2Jzero, one\\nfile.png  9 1.0000, 2, 3, 4, 5, 6, 7, 8, 9 (10)\n"
            in out)
    assert cli.main(["spec", "show", hostile]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "labels \\x1b[2Jzero, one\\nfile.png  9 1.0000, 2," in out


def test_visible_and_file_name_rules():
    assert visible("a\tb\r\n\x1b\x7f\u202e\U000e0001ok") == \
        "a\\tb\\r\\n\\x1b\\x7f\\u202e\\U000e0001ok"
    undecodable = os.fsdecode(b"bad\xffname.png")
    assert visible(undecodable) == file_name(undecodable) == "bad\\xffname.png"
    assert file_name("new\nline.png") == "new\nline.png"  # CSV and JSON quote it themselves


# ---- file names in every output format; --csv whole or not at all ------------------------

NAMES = [b"a.png", b"new\nline.png", b"bad\xffutf8.png", b"esc\x1b[2J.png"]


@pytest.fixture()
def named(tmp_path) -> str:
    folder = os.path.join(os.fsencode(tmp_path), b"named")
    os.mkdir(folder)
    for name in NAMES:
        _png(os.path.join(folder, name))
    return os.fsdecode(folder)


def test_any_file_name_survives_text_json_and_csv(hostile, named, tmp_path, capsys):
    shown = ["a.png", "bad\\xffutf8.png", "esc\\x1b[2J.png", "new\\nline.png"]  # sorted
    assert cli.main(["predict", hostile, named, "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{name}  one\\nfile.png  9 1.0000 0.231969" for name in shown]
    assert cli.main(["predict", hostile, named, "--json", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == ["a.png", "bad\\xffutf8.png", "esc\x1b[2J.png",
                                         "new\nline.png"]
    out = tmp_path / "out.csv"
    assert cli.main(["predict", hostile, named, "--csv", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().err == f"4 images -> {out}\n"
    with open(out, encoding="utf-8", newline="") as f:  # valid UTF-8, every row whole
        table = list(csv.reader(f))
    assert table[0] == ["file", "label", "index", "probability", "top"]
    assert [row[0] for row in table[1:]] == [r["file"] for r in rows]
    assert {row[1] for row in table[1:]} == {HOSTILE_LABELS[1]}  # raw in CSV


def test_file_names_given_one_by_one_and_in_errors(hostile, named, tmp_path, capsys):
    files = sorted(os.path.join(named, name) for name in os.listdir(named))
    assert cli.main(["predict", hostile, *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0].strip().removeprefix(named + "/") for line in lines] == [
        "a.png", "bad\\xffutf8.png", "esc\\x1b[2J.png", "new\\nline.png"]
    assert cli.main(["predict", hostile, *files, "--json"]) == 0
    assert [os.path.basename(r["file"]) for r in json.loads(capsys.readouterr().out)] == [
        "a.png", "bad\\xffutf8.png", "esc\x1b[2J.png", "new\nline.png"]
    broken = os.path.join(named, "evil\x1b[2J\nfake.png")
    with open(broken, "w") as f:
        f.write("not an image")
    assert cli.main(["predict", hostile, broken]) == 1
    assert capsys.readouterr().err == (f"dlinfer: error: {named}/evil\\x1b[2J\\nfake.png: not "
                                       "an image file Pillow can read\n")
    assert cli.main(["predict", hostile, named, "--no-progress"]) == 0
    assert capsys.readouterr().err == (f"dlinfer: skipped {named}/evil\\x1b[2J\\nfake.png: "
                                       "not an image file Pillow can read\n")


def test_csv_is_written_whole_or_not_at_all(hostile, named, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.csv"
    out.write_text("the previous run\n")
    real = Classifier.predict_folder

    def fails_after_one(self, *args, **kwargs):
        walk = real(self, *args, **kwargs)
        yield next(walk)
        raise ImageDecodeError("the disk went away")

    monkeypatch.setattr(Classifier, "predict_folder", fails_after_one)
    assert cli.main(["predict", hostile, named, "--csv", str(out), "--no-progress"]) == 1
    assert capsys.readouterr().err == "dlinfer: error: the disk went away\n"
    assert out.read_text() == "the previous run\n"
    assert sorted(os.listdir(tmp_path)) == ["named", "out.csv"]  # no temporary left


def test_csv_dash_is_stdout(hostile, named, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["predict", hostile, named, "--csv", "-", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "file,label,index,probability,top"
    assert captured.err == "4 images -> stdout\n"
    assert not os.path.exists(tmp_path / "-")


# ---- a pickled .npz -------------------------------------------------------------------

def test_a_pickled_npz_is_an_input_error_like_a_pickled_npy(tmp_path):
    objects = np.array([{"a": 1}], dtype=object)
    npz, npy = str(tmp_path / "p.npz"), str(tmp_path / "p.npy")
    np.savez(npz, images=objects)
    np.save(npy, objects)
    reason = "Object arrays cannot be loaded when allow_pickle=False"
    with pytest.raises(InputError, match=f"^could not read data '{re.escape(npz)}' as a .npz "
                                         f"file: {reason}$"):
        read_arrays(npz)
    with pytest.raises(InputError, match=f"^could not read data '{re.escape(npy)}' as a .npy "
                                         f"or .npz file: {reason}$"):
        read_arrays(npy)
    spec = InputSpec(name="images", shape=(None, 28, 28, 1))
    with pytest.raises(InputError, match="as a .npz file"):
        load_samples(npz, [spec], 4)


@requires("onnx", "onnxruntime.quantization")
def test_optimize_calibrate_with_a_pickled_npz_exits_1(digits, tmp_path, capsys):
    npz = str(tmp_path / "p.npz")
    np.savez(npz, images=np.array([{"a": 1}], dtype=object))
    assert cli.main(["optimize", digits, "--mode", "int8", "--calibrate", npz,
                     "--out", str(tmp_path / "o.onnx")]) == 1
    assert capsys.readouterr().err == (
        f"dlinfer: error: could not read data '{npz}' as a .npz file: Object arrays cannot "
        "be loaded when allow_pickle=False\n")


# ---- the folder walk ------------------------------------------------------------------

def _fifo(path) -> None:
    os.mkfifo(path)


UNREADABLE = {  # entry name -> (make it, what the walk says about it)
    "loop.png": (lambda p: os.symlink(p, p), "cannot read (Too many levels of symbolic links)"),
    "fifo.png": (_fifo, "not a regular file (a FIFO)"),
    "dangling.png": (lambda p: os.symlink(p + ".gone", p),
                     "not a regular file (a symlink to nothing)"),
    "folder.png": (lambda p: os.symlink(os.path.dirname(p) + "/sub", p),
                   "not a regular file (a symlinked folder, not entered)"),
}


@pytest.fixture()
def messy(tmp_path) -> str:
    """a.png, sub/b.png, locked/c.png and every UNREADABLE entry."""
    root = tmp_path / "messy"
    for folder in ("sub", "locked"):
        (root / folder).mkdir(parents=True)
    _png(root / "a.png")
    _png(root / "sub" / "b.png")
    _png(root / "locked" / "c.png")
    for name, (make, _) in UNREADABLE.items():
        make(str(root / name))
    return str(root)


@pytest.fixture()
def locked(messy, monkeypatch) -> str:
    """messy/locked cannot be listed.  The tests run as root, whom permissions do not stop,
    and the interpreter lives in root's home, which no other user may run: so the
    refusal is os.scandir's own PermissionError, raised for that folder alone
    (test_a_folder_without_read_permission_is_skipped checks real permissions where
    the tests do not run as root)."""
    path = os.path.join(messy, "locked")
    scandir = os.scandir

    def refusing(folder="."):
        if os.fspath(folder) == path:
            raise PermissionError(13, "Permission denied", path)
        return scandir(folder)

    monkeypatch.setattr(os, "scandir", refusing)
    return path


def test_the_walk_skips_and_reports_what_it_cannot_read(digits, messy, locked, capsys):
    assert cli.main(["predict", digits, messy, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert [line.split("  ")[0] for line in captured.out.splitlines()] == ["a.png", "sub/b.png"]
    assert captured.err.splitlines() == [
        f"dlinfer: skipped {messy}/dangling.png: not a regular file (a symlink to nothing)",
        f"dlinfer: skipped {messy}/fifo.png: not a regular file (a FIFO)",
        f"dlinfer: skipped {messy}/folder.png: not a regular file (a symlinked folder, not "
        "entered)",
        f"dlinfer: skipped {locked}: cannot list the folder (Permission denied)",
        f"dlinfer: skipped {messy}/loop.png: cannot read (Too many levels of symbolic links)",
    ]


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_in_raise_mode_the_walk_raises_naming_the_path(digits, tmp_path, name):
    make, problem = UNREADABLE[name]
    root = tmp_path / "one"
    (root / "sub").mkdir(parents=True)
    _png(root / "a.png")
    make(str(root / name))
    with pytest.raises(ImageDecodeError, match=f"^{re.escape(f'{root / name}: {problem}')}$"):
        list(Classifier(digits).predict_folder(root, progress=False))


def test_in_raise_mode_an_unreadable_folder_raises_naming_it(messy, locked):
    reported = []
    walked = list(iter_image_files(messy, on_unreadable=reported.append))
    assert walked == [f"{messy}/a.png", f"{messy}/sub/b.png"] and len(reported) == 5
    os.remove(f"{messy}/dangling.png")  # the entries sorted before it would raise first
    os.remove(f"{messy}/fifo.png")
    os.remove(f"{messy}/folder.png")
    with pytest.raises(ImageDecodeError,
                       match=f"^{re.escape(locked)}: cannot list the folder \\(Permission "
                             "denied\\)$"):
        list(iter_image_files(messy))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a folder whatever its permissions")
def test_a_folder_without_read_permission_is_skipped(messy):
    path = os.path.join(messy, "locked")
    os.chmod(path, 0)
    try:
        reported = []
        list(iter_image_files(messy, on_unreadable=reported.append))
        assert f"{path}: cannot list the folder (Permission denied)" in map(str, reported)
    finally:
        os.chmod(path, 0o755)


def test_an_unreadable_file_is_named_as_unreadable(tmp_path, monkeypatch):
    """As root, open() is simulated to refuse, for the reason given at the `locked` fixture."""
    path = tmp_path / "secret.png"
    _png(path)
    if os.geteuid() == 0:
        real = Image.open

        def refusing(source, *args, **kwargs):
            if os.fspath(source) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real(source, *args, **kwargs)

        monkeypatch.setattr(Image, "open", refusing)
    else:
        os.chmod(path, 0)
    with pytest.raises(ImageDecodeError,
                       match=f"^{re.escape(str(path))}: cannot read the file \\(Permission "
                             "denied\\)$"):
        decode_file(path)


# ---- EXIF orientation for PIL images --------------------------------------------------

def test_a_pil_image_gets_the_exif_orientation_a_path_gets(digits, tmp_path):
    rng = np.random.default_rng(SEED)
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: rotate 90 degrees clockwise to show
    path = tmp_path / "phone.jpg"
    Image.fromarray(rng.integers(0, 256, (28, 56, 3), np.uint8)).save(
        path, exif=exif.tobytes(), quality=95)
    from_path, _ = decode_file(path)
    with Image.open(path) as img:
        from_image, _ = from_pil(img)
    assert from_path.shape == (56, 28, 3)  # upright: the stored 28x56 turned
    np.testing.assert_array_equal(from_image, from_path)
    clf = Classifier(digits)
    with Image.open(path) as img:
        np.testing.assert_array_equal(clf.predict_proba([img]), clf.predict_proba([str(path)]))


# ---- the exit-status rule and bench --plot ----------------------------------------------

def test_one_exit_status_rule(digits, tmp_path, capsys):
    """0 done; 1 an error while running (a spec refusal too); 2 a bad command line."""
    model = tmp_path / "m.onnx"
    model.write_bytes(open(digits, "rb").read())
    assert cli.main(["spec", "set", str(model), "--std", "0"]) == 1
    assert capsys.readouterr().err.startswith("dlinfer: error: ")
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", digits, str(model), "--top-k", "0"])
    assert info.value.code == 2


@requires("matplotlib")
def test_bench_plot_names_its_file(digits, tmp_path, capsys):
    plot = tmp_path / "bench.png"
    assert cli.main(["bench", digits, "--batch-sizes", "1", "--iters", "2", "--warmup", "0",
                     "--plot", str(plot)]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"plot -> {plot}"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


if sys.platform != "linux":  # FIFOs, symlink loops and byte file names are POSIX's
    pytestmark = pytest.mark.skip(reason="POSIX file names and special files")
