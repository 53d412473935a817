"""The `make demo` job: the whole promise, end to end, on the MNIST CNN.

1. train the workshop CNN on real digits;
2. export it to ONNX with its spec;
3. check Keras/ONNX parity on the held-out digits;
4. write 10 test digits as PNG files and classify them with dlinfer;
5. time Keras predict_on_batch against dlinfer on the same batch.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import dlinfer
from PIL import Image

from .train import train

# The bar for the demo; a miss fails the run instead of printing a shrug.
MIN_ACCURACY = 0.95
MAX_ABS_DIFF = 1e-5


def _median_seconds(fn, repeats: int = 15) -> float:
    fn()  # warm-up: first calls pay for graph building and allocation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def relative_speed(baseline_s: float, ours_s: float, baseline: str = "Keras") -> str:
    """"1.4x faster than Keras", "1.3x slower than Keras" or "as fast as Keras": the ratio
    above 1 whichever side wins ("0.8x faster" read as a gain and was a loss), and no
    "1.0x faster" for a difference the one decimal cannot show."""
    ratio = baseline_s / ours_s
    if round(ratio, 1) == 1.0 or round(1 / ratio, 1) == 1.0:
        return f"as fast as {baseline}"
    if ratio > 1:
        return f"{ratio:.1f}x faster than {baseline}"
    return f"{1 / ratio:.1f}x slower than {baseline}"


def run(epochs: int = 5, out: str = "artifacts") -> int:
    print("== 1-3. train, export, parity ==", flush=True)
    result = train("mnist_cnn", epochs=epochs, out=out)
    r = result.report
    print(
        f"Keras test accuracy {r['keras_test_accuracy']:.4f} | ONNX test accuracy "
        f"{r['onnx_test_accuracy']:.4f} | max abs diff {r['max_abs_diff']:.2e} | "
        f"argmax agreement {r['argmax_agreement']:.4f} | on {r['test_samples']} held-out digits"
    )
    print(f"wrote {result.onnx_path}")
    failures = []
    if r["keras_test_accuracy"] < MIN_ACCURACY:
        failures.append(f"Keras accuracy {r['keras_test_accuracy']:.4f} < {MIN_ACCURACY}")
    if r["onnx_test_accuracy"] != r["keras_test_accuracy"]:
        failures.append("ONNX accuracy differs from Keras")
    if r["max_abs_diff"] > MAX_ABS_DIFF:
        failures.append(f"max abs diff {r['max_abs_diff']:.2e} > {MAX_ABS_DIFF}")
    if r["argmax_agreement"] != 1.0:
        failures.append(f"argmax agreement {r['argmax_agreement']} != 1.0")

    print("\n== 4. classify 10 test digits with dlinfer (no TensorFlow involved) ==")
    digits_dir = os.path.join(out, "digits")
    os.makedirs(digits_dir, exist_ok=True)
    paths = []
    for i in range(10):
        path = os.path.join(digits_dir, f"test_{i:02d}.png")
        Image.fromarray(result.split.x_test[i]).save(path)
        paths.append(path)
    clf = dlinfer.Classifier(result.onnx_path)
    print(f"{'file':<32} {'predicted':>9} {'probability':>11} {'true':>5}")
    for path, pred, true in zip(paths, clf.predict(paths), result.split.y_test[:10]):
        mark = "" if pred.index == true else "  <- wrong"
        print(f"{path:<32} {pred.label:>9} {pred.probability:>11.4f} {true:>5}{mark}")

    print("\n== 5. time per image, same batch of held-out digits ==")
    batch = result.x_test
    keras_model = result.keras_model
    t_keras = _median_seconds(lambda: keras_model.predict_on_batch(batch))
    t_dlinfer = _median_seconds(lambda: clf.model.run(batch))
    pixels = result.split.x_test
    t_e2e = _median_seconds(lambda: clf.predict_proba(pixels))
    n = len(batch)
    print(f"batch of {n}, median of 15 runs, {clf.model.providers[0]}:")
    print(f"  Keras predict_on_batch       {t_keras / n * 1e6:8.1f} us/image")
    print(f"  dlinfer Model.run            {t_dlinfer / n * 1e6:8.1f} us/image  "
          f"({relative_speed(t_keras, t_dlinfer)})")
    print(f"  dlinfer Classifier (uint8)   {t_e2e / n * 1e6:8.1f} us/image  "
          f"(includes native preprocessing)")

    if failures:
        print("\nDEMO FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("\ndemo passed: accuracy, parity and inference all check out")
    return 0
