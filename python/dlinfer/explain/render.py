"""Pictures from maps, with Pillow only: colour maps, heatmap overlays, grids, PNG bytes.

The colour maps are piecewise-linear through anchor colours sampled from matplotlib's
``turbo`` (heatmaps over photos) and ``viridis`` (activations), so that the pictures
look as users know them without matplotlib installed.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["colorize", "enlarge", "grid", "overlay", "png_bytes", "tile_image"]

_ANCHORS = {
    "turbo": [(48, 18, 59), (70, 107, 227), (40, 187, 236), (49, 242, 153), (162, 252, 60),
              (237, 208, 58), (251, 128, 34), (208, 47, 5), (122, 4, 3)],
    "viridis": [(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
                (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)],
}


def colorize(m: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """(H, W) values in [0, 1] as (H, W, 3) uint8 colours."""
    anchors = np.asarray(_ANCHORS[cmap], np.float32)
    pos = np.clip(np.nan_to_num(m, nan=0.0), 0.0, 1.0) * (len(anchors) - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, len(anchors) - 1)
    f = (pos - lo)[..., None]
    return (anchors[lo] * (1 - f) + anchors[hi] * f + 0.5).astype(np.uint8)


def _rgb(pixels: np.ndarray, order: str = "RGB") -> np.ndarray:
    """Decoded pixels (H, W, C) in their colour order as RGB uint8."""
    if pixels.ndim == 2 or pixels.shape[-1] == 1:
        g = pixels.reshape(pixels.shape[0], pixels.shape[1])
        return np.repeat(g[..., None], 3, axis=2)
    rgb = pixels[..., :3]
    return rgb[..., ::-1] if order.startswith("BGR") else rgb


def overlay(pixels: np.ndarray, heatmap: np.ndarray, order: str = "RGB",
            alpha: float = 0.45) -> Image.Image:
    """The heatmap (same height and width, in [0, 1]) in colour over the image."""
    base = _rgb(np.asarray(pixels), order).astype(np.float32)
    heat = colorize(heatmap).astype(np.float32)
    # Where the map is near 0 the image shows through more.
    a = alpha * (0.35 + 0.65 * np.clip(heatmap, 0, 1))[..., None]
    return Image.fromarray((base * (1 - a) + heat * a + 0.5).astype(np.uint8))


def enlarge(tile: np.ndarray, min_side: int = 48) -> np.ndarray:
    """A (h, w) or (h, w, c) tile repeated by whole pixels until its longer side is at
    least ``min_side``: a 3x3 kernel stays nine sharp squares."""
    k = max(1, math.ceil(min_side / max(tile.shape[:2])))
    if k == 1:
        return tile
    return np.repeat(np.repeat(tile, k, axis=0), k, axis=1)


def tile_image(m: np.ndarray, min_side: int = 48) -> np.ndarray:
    """One 2-D map scaled to [0, 1] on its own range, enlarged by whole pixels."""
    m = m.astype(np.float32)
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return enlarge(m, min_side)


def grid(tiles: list[np.ndarray], cmap: str | None = "viridis", gap: int = 2,
         columns: int | None = None) -> Image.Image:
    """Tiles of one size side by side, ``columns`` a row (default: a near square).

    2-D tiles in [0, 1] get the colour map (None: grey); (h, w, 3) tiles are RGB in
    [0, 1] already.
    """
    if not tiles:
        raise ValueError("no tiles to draw")
    n = len(tiles)
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = tiles[0].shape[:2]
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        if t.ndim == 2:
            rgb = (colorize(t, cmap) if cmap else
                   np.repeat((np.clip(t, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None], 3, 2))
        else:
            rgb = (np.clip(t, 0, 1) * 255 + 0.5).astype(np.uint8)
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        canvas[y:y + h, x:x + w] = rgb
    return Image.fromarray(canvas)


def png_bytes(image: Image.Image | Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
