"""Proving an export right: the closeness rule (:mod:`.compare`), dlinfer's reference
executor (:mod:`.reference`) on its own kernels (:mod:`.kernels`), and ``dlinfer
verify`` (:mod:`.verify`), which compares Keras, onnxruntime and the reference."""
