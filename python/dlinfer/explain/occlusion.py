"""Occlusion maps (Zeiler and Fergus 2014): the black-box fallback, no gradients.

A square patch slides over the model's input with half-patch steps; each position is
one copy of the image with the patch set to 0 in the model's input space (the mean
colour where the spec subtracts a mean, black where it only scales).  All copies run
through the classifier in batches, and each input pixel gets the mean drop in the
target's probability over the patches that covered it.  Works on any classifier
``Classifier`` can run, whatever its ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..checks import check_int

__all__ = ["default_patch", "occlusion_maps"]

# About 7 patches across the image's shorter side, as in the usual practice (a 224
# input: 32-pixel patches); a finer patch only sharpens edges at many more calls.
PATCHES_ACROSS = 7


def default_patch(height: int, width: int) -> int:
    return max(1, round(min(height, width) / PATCHES_ACROSS))


def _positions(extent: int, patch: int, stride: int) -> list[int]:
    """Patch starts from 0 to extent - patch, the last one flush with the edge."""
    last = max(extent - patch, 0)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def occlusion_maps(clf: Any, batch: np.ndarray, targets: list[int], *,
                   patch: int | None = None, stride: int | None = None,
                   batch_size: int = 32) -> list[np.ndarray]:
    """Per image, the (height, width) mean drop of P(target) when a patch hides a pixel."""
    nhwc = clf.preprocessing.layout == "NHWC"
    h, w = (batch.shape[1], batch.shape[2]) if nhwc else (batch.shape[2], batch.shape[3])
    patch = check_int(patch if patch is not None else default_patch(h, w), "patch",
                      min=1, max=max(h, w))
    stride = check_int(stride if stride is not None else max(1, patch // 2), "stride",
                       min=1, max=max(h, w))
    spots = [(y, x) for y in _positions(h, patch, stride) for x in _positions(w, patch, stride)]
    cover = np.zeros((h, w), np.float32)
    for y, x in spots:
        cover[y:y + patch, x:x + patch] += 1
    chunk = max(batch_size, 1)
    maps = []
    for image, target in zip(batch, targets):
        base = float(clf.run_batch(image[None])[0, target])
        drops = np.empty(len(spots), np.float32)
        for start in range(0, len(spots), chunk):
            part = spots[start:start + chunk]
            copies = np.repeat(image[None], len(part), axis=0)
            for j, (y, x) in enumerate(part):
                if nhwc:
                    copies[j, y:y + patch, x:x + patch, :] = 0
                else:
                    copies[j, :, y:y + patch, x:x + patch] = 0
            drops[start:start + len(part)] = base - clf.run_batch(copies)[:, target]
        total = np.zeros((h, w), np.float32)
        for (y, x), d in zip(spots, drops):
            total[y:y + patch, x:x + patch] += d
        maps.append(total / np.maximum(cover, 1))
    return maps
