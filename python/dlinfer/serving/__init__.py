"""Serving many callers: :class:`~dlinfer.Batcher` (dynamic batching in process) and
``dlinfer serve`` (:mod:`.server`, HTTP; needs the ``serve`` extra).

Nothing here is imported by ``import dlinfer``: asyncio and Starlette load on first use.
"""
