"""The runtime must not pull in TensorFlow or Keras, even indirectly."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import dlinfer
after_import = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))
clf = dlinfer.Classifier(sys.argv[1])
preds = clf.predict(sys.argv[2:])
after_predict = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))
print(json.dumps({"import": after_import, "predict": after_predict, "n": len(preds)}))
"""


def test_import_and_predict_leave_no_tensorflow(mnist_onnx, digit_pngs):
    paths, _ = digit_pngs
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mnist_onnx, *paths[:3]],
        capture_output=True, text=True, timeout=120, check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"import": [], "predict": [], "n": 3}
