"""The one image decoder: files, uploaded bytes, PIL images and arrays -> uint8 pixels.

Files and bytes are decoded with Pillow: EXIF orientation is applied, palette and transparent
images are composited onto black, 16-bit images are scaled to 8 bits, CMYK and the
other colour spaces become RGB.  Large JPEGs are decoded in draft mode (DCT
scaling) when the target is much smaller, and an image that would need more than
a memory budget to decode is refused before it is decoded.  Errors name the item
(file path or batch index) and the problem.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DecompressionBombError, ImageDecodeError, InputShapeError
from .batching import Pixels, array_pixels, item_name, unsupported_item

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "IMAGE_EXTENSIONS",
    "decode_bytes",
    "decode_file",
    "from_pil",
    "iter_image_files",
    "load_image",
    "to_pixels",
]

PathLike = str | os.PathLike

# 512 MiB of decoded pixels: a 12k x 15k RGB photo.  Pillow's own bomb limit
# (about 179 M pixels) sits in the same range.
DEFAULT_MAX_IMAGE_BYTES = 512 * 2**20

# File extensions Pillow can open: what a folder walk picks up as images.
IMAGE_EXTENSIONS = frozenset(
    ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
)

# EXIF orientations 5..8 swap width and height.
_TRANSPOSED = (5, 6, 7, 8)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _pil_mode_pixels(img: Image.Image) -> Pixels:
    """A decoded PIL image as uint8 pixels, in GRAY or RGB order."""
    mode = img.mode
    if mode in _SIXTEEN_BIT:
        # 16-bit samples: scale 0..65535 to 0..255 with rounding, as a viewer would.
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)[:, :, None], "GRAY"
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)[:, :, None], "GRAY"
    gray = mode in ("1", "L", "LA", "La") or (mode == "P" and _gray_palette(img))
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in img.info:
        # Composite transparent pixels onto black, the background MNIST-style models
        # were trained on, instead of exposing whatever colour the hidden pixels hold.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if gray else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return (arr[:, :, None], "GRAY") if arr.ndim == 2 else (arr, "RGB")


def _gray_palette(img: Image.Image) -> bool:
    palette = img.getpalette() or []
    triples = [palette[i : i + 3] for i in range(0, len(palette) - 2, 3)]
    return bool(triples) and all(r == g == b for r, g, b in triples)


def from_pil(img: Image.Image, where: str = "image",
             max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Pixels:
    """A PIL image (already opened by the caller) as uint8 pixels.

    An image opened but not loaded yet is decoded here, under the same budget as a file,
    and turned upright by its EXIF orientation as a file is (an image the caller already
    transposed has no orientation tag left); a closed, truncated or empty one is refused
    naming ``where``.
    """
    w, h = img.size
    if w == 0 or h == 0:
        raise InputShapeError(f"{where}: the image is empty ({w}x{h} PIL image)")
    _check_budget(img, where, max_image_bytes)
    try:
        img.load()
        return _pil_mode_pixels(ImageOps.exif_transpose(img))
    except ValueError as exc:  # Pillow: "Operation on closed image"
        raise ImageDecodeError(f"{where}: cannot read the PIL image ({exc})") from exc
    except (OSError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"{where}: corrupt or truncated image ({exc})") from exc


def _check_budget(img: Image.Image, where: str, max_image_bytes: int) -> None:
    """Refuse, from the header alone, an image needing more than the budget decoded."""
    w, h = img.size
    bands = len(img.getbands()) + (1 if "transparency" in img.info else 0)
    needed = w * h * max(bands, 3) * (2 if img.mode in _SIXTEEN_BIT else 1)
    if needed > max_image_bytes:
        raise DecompressionBombError(
            f"{where}: a {w}x{h} {img.mode} image needs {needed:,} bytes decoded, "
            f"over the budget of {max_image_bytes:,} (max_image_bytes); refusing to "
            "decode it"
        )


def decode_file(
    path: PathLike,
    target: Callable[[int, int], tuple[int, int]] | None = None,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Pixels:
    """Decode an image file to uint8 pixels, honouring EXIF orientation.

    ``target(height, width)`` gives the size the image will be resized to; when a
    JPEG is at least twice that in both directions, Pillow's draft mode decodes it
    at 1/2, 1/4 or 1/8 scale (never below twice the target), which is both faster
    and a better low-pass filter than a full decode.  Images needing more than
    ``max_image_bytes`` decoded are refused with :class:`DecompressionBombError`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageDecodeError(f"{path}: file not found")
    if os.path.isdir(path):
        raise ImageDecodeError(f"{path}: is a directory, not an image file")
    if not os.path.isfile(path):
        # A FIFO or device would block open() or read forever.
        raise ImageDecodeError(f"{path}: not a regular file")
    return _decode(path, path, target, max_image_bytes)


def decode_bytes(
    data: bytes,
    where: str = "image",
    target: Callable[[int, int], tuple[int, int]] | None = None,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Pixels:
    """Decode an encoded image held in memory (an upload), exactly as :func:`decode_file`.

    ``where`` names the image in error messages.
    """
    if not data:
        raise ImageDecodeError(f"{where}: empty; expected the bytes of an image file")
    return _decode(io.BytesIO(data), where, target, max_image_bytes)


def _decode(
    source: str | io.BytesIO,
    where: str,
    target: Callable[[int, int], tuple[int, int]] | None,
    max_image_bytes: int,
) -> Pixels:
    """The one decoder: budget check from the header, then decode, orient, convert."""
    try:
        with Image.open(source) as img:
            if img.format != "JPEG":  # (a JPEG may fit once drafted, below)
                # Before getexif(): a PNG's decodes the whole image to look for an eXIf chunk.
                _check_budget(img, where, max_image_bytes)
            orientation = img.getexif().get(0x0112, 1)
            # Draft only plain L/RGB JPEGs: CMYK and YCCK keep their own conversion.
            if target is not None and img.format == "JPEG" and img.mode in ("L", "RGB"):
                w, h = img.size
                if orientation in _TRANSPOSED:
                    w, h = h, w
                th, tw = target(h, w)
                if h >= 2 * th and w >= 2 * tw:
                    request = (2 * tw, 2 * th)
                    if orientation in _TRANSPOSED:
                        request = request[::-1]
                    img.draft(img.mode, request)
            _check_budget(img, where, max_image_bytes)
            img.load()  # decode now, so truncation fails here and names this image
            img = ImageOps.exif_transpose(img)
            return _pil_mode_pixels(img)
    except FileNotFoundError:
        raise ImageDecodeError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{where}: is a directory, not an image file") from None
    except PermissionError as exc:
        raise ImageDecodeError(f"{where}: cannot read the file ({_reason(exc)})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{where}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(f"{where}: {exc} (Pillow's limit, checked before the budget "
                                     f"of {max_image_bytes:,} bytes, max_image_bytes)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageDecodeError):
            raise
        raise ImageDecodeError(f"{where}: corrupt or truncated image ({exc})") from exc


def load_image(path: PathLike, color: str = "RGB") -> Image.Image:
    """Decode an image file as a PIL image in mode "L" (``color="GRAY"``) or "RGB"."""
    arr, order = decode_file(path)
    img = Image.fromarray(arr[:, :, 0] if order == "GRAY" else arr)
    return img.convert("L" if color == "GRAY" else "RGB")


def to_pixels(
    items: Sequence[Any],
    *,
    input_color: str | None = None,
    target: Callable[[int, int], tuple[int, int]] | None = None,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    threads: int | None = None,
) -> list[Pixels]:
    """uint8 pixels for every item; files are decoded in parallel threads.

    Pillow releases the GIL while decoding, so threads decode files side by side.
    """
    out: list[Pixels | None] = [None] * len(items)
    files: list[int] = []
    for i, item in enumerate(items):
        name = item_name(item, i, len(items))
        if isinstance(item, (str, os.PathLike)):
            files.append(i)
        elif isinstance(item, Image.Image):
            out[i] = from_pil(item, name, max_image_bytes)
        elif isinstance(item, np.ndarray) or _nested_numbers(item):
            out[i] = array_pixels(np.asarray(item), name, input_color)
        else:
            raise unsupported_item(item, name)

    def decode(i: int) -> Pixels:
        return decode_file(items[i], target, max_image_bytes)

    workers = min(len(files), threads or os.cpu_count() or 1)
    if workers <= 1:
        for i in files:
            out[i] = decode(i)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="dlinfer-decode") as pool:
            # map() re-raises the first failure in input order, naming its file.
            for i, px in zip(files, pool.map(decode, files)):
                out[i] = px
    return out  # type: ignore[return-value]


def _nested_numbers(item: Any) -> bool:
    """A (nested) list of pixel values, as NumPy would read it into an array."""
    if not isinstance(item, (list, tuple)):
        return False
    try:
        return np.asarray(item).dtype.kind in "biuf"
    except ValueError:  # ragged lists
        return False


def iter_image_files(
    root: str,
    recursive: bool = True,
    on_unreadable: Callable[[ImageDecodeError], None] | None = None,
) -> Iterator[str]:
    """Image files under ``root`` (by extension), lazily, in sorted order per folder.

    Regular files only (a symlink counts as what it points to; a symlinked folder is not
    entered, so a folder cannot loop).  What cannot be read is an
    :class:`ImageDecodeError` naming its path: a folder that cannot be listed, a symlink
    loop or a dangling symlink, and anything named like an image that is not a regular
    file (a FIFO would block the first read forever).  Without ``on_unreadable`` the first
    one raises; with it, each is passed to ``on_unreadable`` and skipped, and the walk
    goes on.
    """
    def unreadable(problem: ImageDecodeError) -> None:
        if on_unreadable is None:
            raise problem
        on_unreadable(problem)

    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        unreadable(ImageDecodeError(f"{root}: cannot list the folder ({_reason(exc)})"))
        return
    for entry in entries:
        try:
            folder = entry.is_dir(follow_symlinks=False)
            image = (not folder and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS)
            regular = image and entry.is_file(follow_symlinks=True)
            kind = "" if regular or not image else _not_regular(entry.path)
        except OSError as exc:  # ELOOP: a symlink loop; EACCES: a folder we may not search
            unreadable(ImageDecodeError(f"{entry.path}: cannot read ({_reason(exc)})"))
            continue
        if folder and recursive:
            yield from iter_image_files(entry.path, recursive, on_unreadable)
        elif regular:
            yield entry.path
        elif kind:
            unreadable(ImageDecodeError(f"{entry.path}: not a regular file ({kind})"))


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _not_regular(path: str) -> str:
    """What a path named like an image is instead of a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symlink to nothing"
    kinds = ((stat.S_ISDIR, "a symlinked folder, not entered"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    for test, kind in kinds:
        if test(mode):
            return kind
    return "not a file"
