"""The OpenVINO backend: :mod:`.loader` compiles an ONNX file for OpenVINO's CPU plugin,
:mod:`.runner` runs it with one infer request per thread, :mod:`.model` is the
:class:`~dlinfer.Model` that ties them to dlinfer's checks."""
