"""The onnxruntime backend: :mod:`.loader` creates the session (every device).  How it runs
(the C-level run, IO binding) is :class:`dlinfer.Model` itself."""
