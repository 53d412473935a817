"""The runtime must not pull in TensorFlow or Keras, nor the serving and plotting stacks.

Each check runs in a fresh interpreter, so nothing another test imported can hide
(or fake) an import.
"""

from __future__ import annotations

import json
import subprocess
import sys

# What `import dlinfer` must not load: training, serving (asyncio too) and plotting
# load on first use only.
HEAVY = ("tensorflow", "keras", "tf2onnx", "starlette", "uvicorn", "asyncio", "matplotlib")

PREDICT = """
import json, sys
import dlinfer

def loaded(roots):
    return sorted(m for m in sys.modules if m.split('.')[0] in roots)

heavy = tuple(json.loads(sys.argv[1]))
after_import = loaded(heavy)
clf = dlinfer.Classifier(sys.argv[2])
preds = clf.predict(sys.argv[3:])
print(json.dumps({"import": after_import, "predict": loaded(heavy), "n": len(preds)}))
"""


def python(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          check=True)
    return proc.stdout.strip().splitlines()[-1]


def test_import_dlinfer_loads_no_heavy_module():
    # Exactly the command a user would run to check.
    modules = python("-c", "import dlinfer, sys; print(sorted(sys.modules))")
    names = {name.strip("'\" ") for name in modules.strip("[]").split(",")}
    assert "dlinfer" in names  # the listing is real
    assert sorted(n for n in names if n.split(".")[0] in HEAVY) == []


def test_import_and_predict_leave_no_tensorflow(mnist_onnx, digit_pngs):
    paths, _ = digit_pngs
    result = json.loads(python("-c", PREDICT, json.dumps(HEAVY), mnist_onnx, *paths[:3]))
    assert result == {"import": [], "predict": [], "n": 3}


EXPLAIN = """
import json, sys
import dlinfer, dlinfer.explain

clf = dlinfer.Classifier(sys.argv[2])
out = clf.explain(sys.argv[3:], method="saliency")
heavy = tuple(json.loads(sys.argv[1]))
print(json.dumps({"loaded": sorted(m for m in sys.modules if m.split('.')[0] in heavy),
                  "n": len(out)}))
"""


def test_explain_loads_no_tensorflow(mnist_onnx, digit_pngs):
    # Gradients come from the ONNX file alone (dlinfer.explain builds the backward pass).
    paths, _ = digit_pngs
    result = json.loads(python("-c", EXPLAIN, json.dumps(HEAVY), mnist_onnx, *paths[:2]))
    assert result == {"loaded": [], "n": 2}
