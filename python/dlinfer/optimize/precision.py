"""Which backend and precision a candidate is gated on, and the bf16 mode.

Every mode is gated on the backend it will run on: ``--backend onnxruntime`` (the
default) or ``--backend openvino``, whose CPU plugin runs a QDQ int8 file with its own
int8 kernels and a float32 file in bfloat16 when asked.  The report (and so the output's
spec, ``extra.optimize.settings.gated_on``) records the backend and precision that
passed, and the file records how it must run (``dlinfer.session`` metadata).

bf16 is an execution precision, not a file format: onnxruntime's x86 CPU provider has no
bfloat16 kernels to speak of, while OpenVINO runs a float32 graph in bfloat16 on CPUs with
AMX or AVX-512 BF16.  ``--mode bf16`` therefore writes the float32 graph unchanged, with
``{"openvino": {"inference_precision": "bf16"}}`` in its session metadata, after the
accuracy gate passed on OpenVINO in bf16.  onnxruntime runs the same file in float32.

``--mode int8 --bf16`` is the two together, gated as precision ``int8+bf16``: the int8
file, whose unquantized parts (the Add of residual blocks, Softmax, a float first
convolution) OpenVINO runs in bfloat16, as its plugin does by default for NNCF's own IR.
On NNCF's int8 ResNet50 at batch 32 that was 184/s against 132/s with those parts in
float32 (2 threads, one interleaved run on the shared VM).
"""

from __future__ import annotations

from typing import Any

import onnx

from ..errors import OptimizeError
from ..runtime.backends import import_openvino, parse_backend
from ..runtime.model import Model

__all__ = ["BF16", "bf16_candidate", "check_bf16", "gated_model", "gated_on", "nncf_int8",
           "session_metadata"]

_PRECISION = {"int8": "int8", "fp16": "fp16", "graph": "fp32", "bf16": "bf16"}
BF16 = {"inference_precision": "bf16"}  # the settings of a candidate OpenVINO runs in bf16


def gated_on(mode: str, backend: str, bf16: bool = False) -> dict[str, str]:
    """``{"backend", "precision"}`` the candidate of ``mode`` is gated on; ``bf16``: int8
    with the rest in bfloat16 (``--mode int8 --bf16``)."""
    name = parse_backend(backend)
    if name == "auto":
        raise OptimizeError("optimize gates on one backend: give onnxruntime or openvino, "
                            "not auto (auto then picks among the gated files' backends)")
    if bf16 and mode != "int8":
        raise OptimizeError(f"--bf16 goes with --mode int8 (the rest of an int8 graph in "
                            f"bfloat16); for a float32 graph in bfloat16 use --mode bf16, "
                            f"not --mode {mode} --bf16")
    if mode == "bf16" or bf16:
        name = "openvino"  # onnxruntime's x86 CPU provider has no bfloat16 kernels
    return {"backend": name, "precision": "int8+bf16" if bf16 else _PRECISION[mode]}


def check_bf16() -> None:
    """Refuse bfloat16 where this CPU does not run it natively."""
    ov = import_openvino()
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        raise OptimizeError(f"bf16 needs a CPU that runs bfloat16 natively (AMX or AVX-512 "
                            f"BF16); OpenVINO's CPU plugin here offers {', '.join(caps)}")


def bf16_candidate(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The float32 graph as is, for OpenVINO to run in bfloat16; refused where it cannot."""
    check_bf16()
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy, dict(BF16)


def nncf_int8(path: str, calibration: dict[str, Any], axes: Any
              ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """int8 by NNCF's own route (``--method nncf``): its ONNX backend calibrates on the same
    samples and writes QDQ pairs where OpenVINO's and onnxruntime's int8 kernels take them.

    On vgg16_transfer (2 threads, one run) NNCF's file ran batch 1 in 5.5 ms on OpenVINO
    against 8.0 ms for dlinfer's own QDQ file, 16 ms against 21 ms on onnxruntime, both
    gated alike (docs/optimize.md); which route wins is measured per model, not assumed.
    """
    from .._optional import import_optional
    from ..runtime.batch_axis import split

    nncf = import_optional("nncf", "nncf", "int8 calibration by NNCF (--method nncf)")
    items = list(split(calibration, axes, 1))
    try:
        quantized = nncf.quantize(onnx.load(path), nncf.Dataset(items), subset_size=len(items))
    except Exception as exc:  # NNCF raises whatever its graph walk hits
        raise OptimizeError(f"NNCF could not quantize {path}: {exc}") from exc
    return quantized, {"calibration": "nncf", "nncf": nncf.__version__,
                       "samples": len(items)}


def session_metadata(mode: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What the file must carry about how it runs (``dlinfer.session``), or {}."""
    entry: dict[str, Any] = {}
    if settings.get("disabled_optimizers"):
        entry["disabled_optimizers"] = settings["disabled_optimizers"]
    if settings.get("inference_precision") == "bf16":
        entry["openvino"] = dict(BF16)
    return entry


def gated_model(path: str, gate: dict[str, str]) -> Model:
    """The candidate at ``path`` opened on the backend it is gated on."""
    from ..errors import DlinferError

    try:
        return Model(path, threads=None, backend=gate["backend"])
    except DlinferError as exc:
        raise OptimizeError(f"the {gate['precision']} candidate does not load on "
                            f"{gate['backend']}: {exc}") from exc
