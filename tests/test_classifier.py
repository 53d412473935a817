"""Classifier and Model behaviour on the onnx.helper digit classifier (no TensorFlow)."""

from __future__ import annotations

import dlinfer
import numpy as np
import pytest
from optional import cpu_providers
from PIL import Image
from reference import assert_close


@pytest.fixture(scope="module")
def clf(mnist_onnx):
    return dlinfer.Classifier(mnist_onnx)


def test_model_introspection(mnist_onnx):
    m = dlinfer.Model(mnist_onnx)
    assert [(t.name, t.shape, t.dtype) for t in m.inputs] == [
        ("images", (None, 28, 28, 1), np.dtype(np.float32))
    ]
    assert [(t.name, t.shape) for t in m.outputs] == [("probabilities", (None, 10))]
    assert m.providers == cpu_providers()
    assert m.device == "cpu"
    assert dlinfer.METADATA_KEY in m.metadata


def test_model_run_accepts_a_dict_and_call(mnist_onnx, digit_classifier, mnist_digits):
    m = dlinfer.Model(mnist_onnx, threads=1)
    pixels = mnist_digits.x_test[:3]
    x = (pixels / np.float32(255))[..., None]
    np.testing.assert_array_equal(m.run({"images": x}), m(x))
    assert_close(m(x), digit_classifier.probabilities(pixels).astype(np.float32), atol=1e-5,
                 context="Model.run vs the NumPy model")


def test_classifier_is_right_on_held_out_digits(clf, digit_classifier, mnist_digits):
    preds = clf.predict(mnist_digits.x_test)
    accuracy = np.mean([p.index for p in preds] == mnist_digits.y_test)
    # 1,000 real digits it was not fitted on; chance is 0.1, the NumPy model gets ~0.9.
    assert accuracy >= 0.85
    assert accuracy == pytest.approx(digit_classifier.heldout_accuracy, abs=0.005)


def test_predict_files_pil_and_arrays_agree(clf, digit_pngs, mnist_digits):
    paths, labels = digit_pngs
    pixels = mnist_digits.x_test[:10]
    from_files = clf.predict(paths)
    from_pil = clf.predict([Image.open(p) for p in paths])
    from_batch = clf.predict(pixels)
    from_list = clf.predict(list(pixels))
    from_floats = clf.predict(pixels.astype(np.float32) / 255)
    for preds in (from_pil, from_batch, from_list, from_floats):
        assert [p.index for p in preds] == [p.index for p in from_files]
        assert_close(np.array([p.probability for p in preds]),
                     np.array([p.probability for p in from_files]), atol=1e-6)
    assert len(from_files) == 10
    # A ~90% classifier: at least 7 of these 10 held-out digits come out right (chance: 1).
    assert sum(p.index == y for p, y in zip(from_files, labels)) >= 7


def test_single_image_shapes(clf, mnist_digits):
    digit = mnist_digits.x_test[0]
    expected = clf.predict(digit)[0]
    for variant in (digit, digit[:, :, None], digit[None], digit[None, :, :, None]):
        (pred,) = clf.predict(variant)
        assert pred.index == expected.index


def test_top_k_is_sorted_and_labelled(clf, mnist_digits):
    digit = mnist_digits.x_test[0]
    (pred,) = clf.predict(digit, top_k=3)
    assert len(pred.top) == 3
    probs = [c.probability for c in pred.top]
    assert probs == sorted(probs, reverse=True)
    assert pred.label == pred.top[0].label == clf.labels[pred.index]
    proba = clf.predict_proba(digit)
    assert proba.shape == (1, 10)
    assert_close(proba.sum(axis=1), np.ones(1, np.float32), rtol=1e-5)
    assert pred.probability == pytest.approx(float(proba[0].max()))


@pytest.mark.parametrize("top_k", [1, 3])
def test_postprocess_orders_ties_and_nan_like_a_stable_sort(clf, top_k):
    proba = np.full((4, 10), 0.05, np.float32)
    proba[0, [3, 7]] = 0.3  # a tie: the lower index wins, as with argmax
    proba[1, :] = 0.1  # all tied
    proba[2, [0, 4]] = np.nan, 0.4  # NaN sorts last: the best real class wins
    proba[3, 9] = 0.6
    preds = clf.postprocess(proba, top_k)
    order = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
    assert [p.index for p in preds] == [3, 0, 4, 9] == order[:, 0].tolist()
    for pred, row, want in zip(preds, proba, order, strict=True):
        # Built exactly as the dataclasses' own constructors would build them.
        top = tuple(dlinfer.Candidate(clf.labels[j], int(j), float(row[j])) for j in want)
        expected = dlinfer.Prediction(top[0].label, top[0].index, top[0].probability, top)
        assert pred == expected and hash(pred) == hash(expected) and repr(pred) == repr(expected)
    with pytest.raises(AttributeError):
        preds[0].label = "x"  # still frozen


def test_larger_rgb_file_is_converted_and_resized(clf, tmp_path, mnist_digits):
    digit = mnist_digits.x_test[0]
    big = Image.fromarray(digit).resize((112, 112), Image.Resampling.NEAREST).convert("RGB")
    path = tmp_path / "big.jpg"
    big.save(path, quality=95)
    assert clf.predict(str(path))[0].index == clf.predict(digit)[0].index


def test_auto_device_picks_cpu_here_and_says_why(mnist_onnx):
    m = dlinfer.Model(mnist_onnx, device="auto")
    if m.device == "cuda":
        pytest.skip("CUDA works on this machine")
    assert m.providers == cpu_providers()
    assert m.device_reason  # says why CUDA was not chosen


def test_bad_device_string(mnist_onnx):
    with pytest.raises(ValueError, match="device must be"):
        dlinfer.Model(mnist_onnx, device="gpu")


def test_repr(clf):
    assert "mnist_linear" in repr(clf.model) and "labels=10" in repr(clf)
