"""Multi-input, multi-output models: Model.run's forms, Classifier's choices, old specs.

The model (tests/onnx_models.build_two_input) is an image plus a second input, each
flattened into one linear layer, with a softmax head, its logits and a box head;
two_input_forward is its NumPy reference.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from dlinfer import Classifier, Model
from dlinfer.errors import InputDtypeError, InputError, InputShapeError, SpecError
from dlinfer.export.onnx_file import save, set_spec
from dlinfer.spec import METADATA_KEY, InputSpec, ModelSpec, OutputSpec
from onnx_models import Dense, build_mlp, build_two_input, two_input_forward
from optional import requires
from reference import assert_close

SEED = 20_250_614
LABELS = ("cat", "dog", "bird")
IMAGE = InputSpec("image", (None, 8, 8, 3), color="RGB", mean=(0.5,), std=(0.25,))
FEATURES = InputSpec("features", (None, 4), kind="features", layout="NC", color=None, scale=1.0)
MASK = InputSpec("mask", (None, 8, 8, 1), color="GRAY")


def weights(second_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {"w_first": rng.normal(0, 0.1, (192, 3)).astype(np.float32),
            "w_second": rng.normal(0, 1.0, (second_size, 3)).astype(np.float32),
            "bias": rng.normal(0, 0.1, 3).astype(np.float32),
            "w_box": rng.normal(0, 1.0, (second_size, 4)).astype(np.float32)}


def write(folder, name, second: InputSpec, outputs, spec_outputs) -> tuple[str, dict]:
    w = weights(int(np.prod(second.shape[1:])))
    proto = build_two_input(IMAGE.shape, second.shape, **w, outputs=outputs,
                            names=("image", second.name))
    set_spec(proto, ModelSpec(name=name, task="classification", inputs=[IMAGE, second],
                              outputs=spec_outputs))
    path = str(folder / f"{name}.onnx")
    save(proto, path)
    return path, w


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """image + features -> probabilities (labelled) + box."""
    return write(tmp_path_factory.mktemp("multi"), "two_heads", FEATURES,
                 ("probabilities", "box"),
                 [OutputSpec("probabilities", labels=LABELS), OutputSpec("box", kind="value")])


@pytest.fixture(scope="module")
def three_heads(tmp_path_factory):
    """The box first, then logits (labelled, kind logits) and probabilities (labelled)."""
    return write(tmp_path_factory.mktemp("multi"), "three_heads", FEATURES,
                 ("box", "logits", "probabilities"),
                 [OutputSpec("box", kind="value"),
                  OutputSpec("logits", kind="logits", labels=LABELS),
                  OutputSpec("probabilities", labels=LABELS)])


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    return write(tmp_path_factory.mktemp("multi"), "two_images", MASK, ("probabilities",),
                 [OutputSpec("probabilities", labels=LABELS)])


def batch(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 3), dtype=np.float32), rng.normal(size=(n, 4)).astype(np.float32))


# ---- Model.run ----------------------------------------------------------------------------

@pytest.mark.parametrize("io_binding", [False, True], ids=["session", "io_binding"])
def test_run_takes_a_dict_positional_arrays_or_a_list(two_heads, io_binding, backend):
    path, w = two_heads
    model = Model(path, threads=1, io_binding=io_binding, backend=backend)
    image, features = batch(5)
    expected = two_input_forward(image, features, **w)
    calls = {"dict": lambda: model.run({"features": features, "image": image}),
             "positional": lambda: model.run(image, features),
             "list": lambda: model.run([image, features]),
             "tuple": lambda: model((image, features))}
    for how, call in calls.items():
        for _ in range(2):  # the second call reuses what io_binding bound
            got = call()
            assert sorted(got) == ["box", "probabilities"], how
            for name in got:
                assert_close(got[name], expected[name].astype(np.float32), atol=1e-5,
                             rtol=1e-5, context=f"{how}: {name}")


def test_read_only_inputs_give_the_same_answer(two_heads, backend):
    """Arrays over memory dlinfer may not share (np.frombuffer, np.from_dlpack views) are
    copied, and the copies must live until the run ends: OpenVINO once read freed ones."""
    import gc

    path, w = two_heads
    model = Model(path, threads=1, backend=backend)
    for seed in range(3):
        image, features = batch(4, seed)
        expected = two_input_forward(image, features, **w)
        frozen = [np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape)
                  for a in (image, features)]
        assert not any(a.flags.writeable for a in frozen)
        got = model.run(*frozen)
        gc.collect()
        for name in got:
            assert_close(got[name], expected[name].astype(np.float32), atol=1e-5, rtol=1e-5,
                         context=f"read-only inputs, seed {seed}: {name}")


def test_io_binding_writes_into_out_given_by_keyword(two_heads, backend):
    path, w = two_heads
    model = Model(path, threads=1, io_binding=True, backend=backend)
    out = {"probabilities": np.empty((3, 3), np.float32), "box": np.empty((3, 4), np.float32)}
    for seed in (1, 2):  # new data into the same bound out arrays
        image, features = batch(3, seed)
        assert model.run(image, features, out=out) is out
        expected = two_input_forward(image, features, **w)
        assert_close(out["box"], expected["box"].astype(np.float32), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="2 inputs"):
        model.run(image, features, out)  # out is keyword-only for several inputs


@pytest.mark.parametrize("args, error, match", [
    (lambda i, f: (i,), InputError, r"2 inputs \['image', 'features'\]; got 1 array"),
    (lambda i, f: (i, f, f), InputError, r"got 3 array"),
    (lambda i, f: ([i],), InputError, r"got 1 array"),
    (lambda i, f: ({"image": i},), InputError, r"missing: \['features'\]"),
    (lambda i, f: ({"image": i, "features": f, "extra": f},), InputError, r"unknown: \['extra'\]"),
    (lambda i, f: (i, f[:2]), InputShapeError, r"batch sizes differ: \{'image': 3, 'feat"),
    (lambda i, f: (i, f.astype(np.float64)), InputDtypeError, r"'features' needs dtype float32"),
    (lambda i, f: (i, f[:, :3]), InputShapeError, r"'features' needs size 4 on axis 1"),
], ids=["one", "three", "short-list", "missing", "unknown", "batches", "dtype", "shape"])
def test_run_errors_name_the_inputs(two_heads, args, error, match, backend):
    model = Model(two_heads[0], threads=1, backend=backend)
    with pytest.raises(error, match=match):
        model.run(*args(*batch(3)))


def test_the_single_input_property_names_every_input(two_heads, backend):
    with pytest.raises(InputError, match=r"2 inputs \['image', 'features'\]"):
        _ = Model(two_heads[0], backend=backend).input


# ---- Classifier -----------------------------------------------------------------------------

def test_classifier_finds_the_image_input_and_the_labelled_head(two_heads, photos):
    path, w = two_heads
    clf = Classifier(path, threads=1)
    assert (clf.image_input, clf.output.name, clf.labels) == ("image", "probabilities",
                                                              list(LABELS))
    images = list(photos.values())  # real photos of any size, resized to 8x8
    features = batch(len(images))[1]
    inputs = clf.preprocess({"image": images, "features": features})
    assert sorted(inputs) == ["features", "image"] and inputs["image"].shape == (5, 8, 8, 3)
    expected = two_input_forward(inputs["image"], features, **w)["probabilities"]
    proba = clf.predict_proba({"image": images, "features": features})
    assert_close(proba, expected.astype(np.float32), atol=1e-6, rtol=1e-5)
    preds = clf.predict({"image": images, "features": features}, top_k=2)
    assert [p.label for p in preds] == [LABELS[i] for i in expected.argmax(1)]
    # one image with one feature vector (a Python list takes the input's dtype)
    one = clf.predict({"image": images[0], "features": features[0].tolist()})
    assert len(one) == 1 and one[0].index == preds[0].index


def test_logits_head_gets_a_softmax(three_heads):
    path, _ = three_heads
    image, features = batch(4)
    default = Classifier(path, threads=1)
    assert default.output.name == "logits"  # the first labelled output
    by_name = Classifier(path, threads=1, output="probabilities")
    inputs = {"image": image, "features": features}
    assert_close(default.predict_proba(inputs), by_name.predict_proba(inputs), atol=1e-6,
                 rtol=1e-5)
    assert_close(default.predict_proba(inputs).sum(axis=1), np.ones(4, np.float32), atol=1e-6)


def test_softmax_of_huge_logits_does_not_overflow(tmp_path):
    layer = Dense(np.array([[1e4, -1e4, 0.0]], np.float32), np.zeros(3, np.float32))
    proto = build_mlp("huge", (None, 1, 1, 1), "logits", [layer], input_name="x")
    set_spec(proto, ModelSpec(name="huge", task="classification",
                              input=InputSpec("x", (None, 1, 1, 1)),  # one gray pixel
                              output=OutputSpec("logits", kind="logits"), labels=("a", "b", "c")))
    save(proto, tmp_path / "huge.onnx")
    clf = Classifier(tmp_path / "huge.onnx")
    with np.errstate(over="raise", invalid="raise"):
        proba = clf.run_batch(np.array([1.0, -1.0], np.float32).reshape(2, 1, 1, 1))
    assert_close(proba, np.array([[1, 0, 0], [0, 1, 0]], np.float32), atol=1e-6)


@pytest.mark.parametrize("options, match", [
    ({"output": "box"}, r"output 'box' .* is not a classification head \(kind 'value'"),
    ({"output": "nope"}, r"no output named 'nope'"),
    ({"image_input": "features"}, r"image_input='features': .* has the image inputs \['image'\]"),
], ids=["box", "unknown-output", "not-an-image"])
def test_classifier_refuses_what_is_not_a_classifier_head_or_image(two_heads, options, match):
    with pytest.raises(SpecError, match=match):
        Classifier(two_heads[0], **options)


def test_classifier_call_errors_name_the_inputs(two_heads, tmp_path):
    clf = Classifier(two_heads[0], threads=1)
    image, features = batch(2)
    with pytest.raises(InputError, match=r"2 inputs \['image', 'features'\]; give a dict"):
        clf.predict(image)
    with pytest.raises(InputError, match=r"missing: \['features'\]"):
        clf.predict({"image": image})
    with pytest.raises(InputDtypeError, match="'features' needs dtype float32"):
        clf.predict({"image": image, "features": features.astype(np.float64)})
    with pytest.raises(InputError, match="single-input image model"):
        next(clf.predict_folder(tmp_path))


def test_two_image_inputs_need_image_input(two_images):
    path, w = two_images
    with pytest.raises(SpecError, match=r"2 image inputs \['image', 'mask'\]; name the one"):
        Classifier(path)
    rng = np.random.default_rng(SEED)
    photos = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    mask = rng.random((3, 8, 8, 1), dtype=np.float32)
    clf = Classifier(path, image_input="image", threads=1)
    inputs = clf.preprocess({"image": photos, "mask": mask})
    expected = two_input_forward(inputs["image"], mask, **w)["probabilities"]
    assert_close(clf.predict_proba({"image": photos, "mask": mask}),
                 expected.astype(np.float32), atol=1e-6, rtol=1e-5)
    # the other way round: the mask's pixels are preprocessed, the image is an array
    other = Classifier(path, image_input="mask", threads=1)
    masks = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    got = other.preprocess({"image": inputs["image"], "mask": masks})["mask"]
    assert_close(got, ((masks / 255.0)[..., None]).astype(np.float32), atol=1e-6)


@requires("starlette", "uvicorn")
def test_serve_refuses_a_multi_input_model_at_startup(two_heads):
    from dlinfer.serving.server import ServeConfig, create_app

    with pytest.raises(SpecError, match=r"cannot serve 'two_heads'.*\['image', 'features'\]"):
        create_app(ServeConfig(models=[two_heads[0]]))


def test_version_1_spec_still_loads(tmp_path):
    """A binary classifier written with spec version 1: labels and threshold at the top."""
    layer = Dense(np.array([[2.0]], np.float32), np.array([-1.0], np.float32), "sigmoid")
    proto = build_mlp("old", (None, 1, 1, 1), "p", [layer], input_name="x")
    spec_v1 = {"spec_version": 1, "name": "old", "task": "binary_classification",
               "input": {"name": "x", "shape": [None, 1, 1, 1], "dtype": "float32",
                         "layout": "NHWC", "color": "GRAY", "scale": 1.0},
               "output": {"name": "p", "kind": "probabilities"},
               "labels": ["no", "yes"], "threshold": 0.7}
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(spec_v1))
    onnx.save(proto, tmp_path / "old.onnx")
    model = Model(tmp_path / "old.onnx")
    assert model.spec.output == OutputSpec("p", labels=("no", "yes"), threshold=0.7)
    clf = Classifier(model)
    x = np.array([0.0, 0.8, 1.0], np.float32).reshape(3, 1, 1, 1)  # P(yes) = sigmoid(2x - 1)
    p_yes = 1.0 / (1.0 + np.exp(-(2.0 * x.ravel() - 1.0)))
    assert_close(clf.run_batch(x), np.stack([1 - p_yes, p_yes], 1).astype(np.float32),
                 atol=1e-6)
    assert [p.label for p in clf.postprocess(clf.run_batch(x))] == ["no", "no", "yes"]


def test_a_classification_spec_on_one_sigmoid_unit_is_refused_at_open(tmp_path):
    """Argmax over one value is always label 0: the file is refused, pointing to binary."""
    layer = Dense(np.array([[2.0]], np.float32), np.array([-1.0], np.float32), "sigmoid")
    proto = build_mlp("one_unit", (None, 1, 1, 1), "p", [layer], input_name="x")
    set_spec(proto, ModelSpec(name="one_unit", task="classification",
                              input=InputSpec("x", (None, 1, 1, 1)),
                              output=OutputSpec("p"), labels=("0",)))
    save(proto, tmp_path / "one_unit.onnx")
    with pytest.raises(SpecError, match=r"output 'p' is a classification head, but the graph's "
                       r"output 'p' \(N, 1\) has 1 value per item .* use --task "
                       r"binary_classification with two labels and a threshold"):
        Model(tmp_path / "one_unit.onnx")


def test_a_dynamic_output_width_of_one_is_refused_for_classification(tmp_path):
    """The same rule when the width is known only as the output comes (Classifier)."""
    flat = onnx.numpy_helper.from_array(np.array([0, -1], np.int64), "flat")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Reshape", ["x", "flat"], ["p"])], "flat",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", "H", "W", 1])],
        [onnx.helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, ["N", "width"])],
        [flat])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)],
                                   ir_version=8)
    set_spec(proto, ModelSpec(name="flat", task="classification",
                              input=InputSpec("x", (None, None, None, 1), color="GRAY"),
                              output=OutputSpec("p"), labels=("0",)))
    save(proto, tmp_path / "flat.onnx")
    clf = Classifier(tmp_path / "flat.onnx")  # nothing to check at open
    with pytest.raises(SpecError, match=r"output 'p' has 1 value per item .* use --task "
                       r"binary_classification with two labels and a threshold"):
        clf.probabilities(np.full((2, 1), 0.9, np.float32))

