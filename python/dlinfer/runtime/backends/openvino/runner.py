"""How a compiled OpenVINO model runs under dlinfer: one infer request per thread.

An ``InferRequest`` holds its input and output tensors, so two threads sharing one would
read each other's answers; ``CompiledModel`` creates them safely from any thread.  Inputs
are shared with OpenVINO, not copied (dlinfer has already checked that they are
C-contiguous and of the input's dtype); outputs are copied out of the request, which
the thread's next call overwrites, or written straight into the caller's ``out``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["OpenVINORunner"]


class OpenVINORunner:
    def __init__(self, compiled: Any, path: str, input_names: list[str],
                 output_ports: list[Any], output_dtypes: list[np.dtype]) -> None:
        self.compiled = compiled
        self.path = path
        self._input_names = input_names
        self._output_ports = output_ports
        self._output_dtypes = output_dtypes
        self._local = threading.local()

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def _infer(self, feed: dict[str, np.ndarray]) -> Any:
        # OpenVINO's untyped errors become InferenceError in Model, as onnxruntime's do.
        request = self._request()
        request.infer(feed, share_inputs=True, share_outputs=True)
        return request

    def run(self, output_names: Any, feed: dict[str, np.ndarray], run_options: Any = None
            ) -> list[np.ndarray]:
        """Like onnxruntime's C-level ``run``: every output, in the model's order."""
        request = self._infer(feed)
        return [np.array(request.get_tensor(port).data, dtype=dtype, copy=True)
                for port, dtype in zip(self._output_ports, self._output_dtypes)]

    def run_into(self, feed: dict[str, np.ndarray], arrays: list[np.ndarray | None]
                 ) -> list[np.ndarray]:
        """Run and write each output into ``arrays`` (None: a fresh array)."""
        request = self._infer(feed)
        results = []
        for port, target, dtype in zip(self._output_ports, arrays, self._output_dtypes):
            data = request.get_tensor(port).data
            if target is None:
                results.append(np.array(data, dtype=dtype, copy=True))
            else:
                np.copyto(target, data, casting="unsafe")
                results.append(target)
        return results
