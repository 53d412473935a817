"""Labelled folders: one sub-folder per class, its images anywhere below it.

The layout ``keras.utils.image_dataset_from_directory`` and ``python -m training train
--data`` read::

    photos/
      cat/  a.jpg  more/b.png
      dog/  c.jpg

Files are read recursively, as ``dlinfer predict DIR`` reads them, and taken in turn
from each class (the first file of every class, then the second ...), so the first N
samples cover every class.  A folder's name is its label: it must match one of the
model's labels (exactly, else ignoring case), or the folder is refused by name.

:func:`folder_files` is what :func:`~dlinfer.verification.samples.load_samples` reads
from any folder; :func:`folder_labels` gives the matching class indices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["SMALL_SAMPLE", "class_folders", "folder_files", "folder_labels",
           "is_labelled_folder", "labelled_files", "sample_count_note"]

#: Fewer samples than this measure an accuracy to no better than about 5 points either
#: way (the binomial standard error at 50% is 5 points at 100 samples): reports warn.
SMALL_SAMPLE = 100


def _images(root: str, recursive: bool) -> list[str]:
    from ..preprocessing.decode import iter_image_files

    return list(iter_image_files(root, recursive=recursive))


def class_folders(root: str) -> list[str]:
    """The sub-folders of ``root`` (sorted, hidden ones left out) that hold an image."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{root}: cannot list the folder ({exc})") from exc
    return [e.name for e in entries if e.is_dir() and not e.name.startswith(".")
            and any(True for _ in _first(e.path))]


def _first(path: str) -> list[str]:
    from ..preprocessing.decode import iter_image_files

    for file in iter_image_files(path, recursive=True):
        return [file]
    return []


def is_labelled_folder(root: str | os.PathLike[str]) -> bool:
    """True for a folder with no images of its own and at least one class sub-folder."""
    root = os.fspath(root)
    return (os.path.isdir(root) and not _images(root, recursive=False)
            and bool(class_folders(root)))


def labelled_files(root: str, count: int | None = None) -> tuple[list[str], list[str]]:
    """At most ``count`` image files under ``root``'s class folders, a class at a time in
    turn, and the class folder of each."""
    per_class = [(name, _images(os.path.join(root, name), recursive=True))
                 for name in class_folders(root)]
    files: list[str] = []
    classes: list[str] = []
    for i in range(max((len(f) for _, f in per_class), default=0)):
        for name, found in per_class:
            if i < len(found):
                files.append(found[i])
                classes.append(name)
    if count is not None:
        files, classes = files[:count], classes[:count]
    return files, classes


def folder_files(root: str, count: int) -> list[str]:
    """The image files a folder gives as samples: its own images, or a labelled folder's."""
    if is_labelled_folder(root):
        return labelled_files(root, count)[0]
    return _images(root, recursive=False)[:count]


def _match(name: str, labels: Sequence[str]) -> int | None:
    if name in labels:
        return list(labels).index(name)
    folded = [str(label).strip().casefold() for label in labels]
    key = name.strip().casefold()
    return folded.index(key) if folded.count(key) == 1 else None


def folder_labels(root: str, count: int, labels: Sequence[str]) -> np.ndarray:
    """The class index (into ``labels``) of each of the first ``count`` samples of a
    labelled folder, in :func:`folder_files`' order.

    Raises:
        InputError: a class folder whose name matches none of ``labels``.
    """
    _, classes = labelled_files(root, count)
    index = {}
    for name in dict.fromkeys(classes):
        found = _match(name, labels)
        if found is None:
            shown = list(labels) if len(labels) <= 20 else [*labels[:20], "..."]
            hint = (" (the model has index labels only: give its class names, in training "
                    "order, with --labels)" if list(labels) == [str(i) for i in
                                                          range(len(labels))] else "")
            raise InputError(f"{root}: class folder {name!r} matches none of the model's "
                             f"labels {shown}{hint}")
        index[name] = found
    return np.asarray([index[name] for name in classes], dtype=np.int64)


def sample_count_note(count: int) -> str | None:
    """A warning for a measurement on fewer than :data:`SMALL_SAMPLE` samples, else None."""
    if count >= SMALL_SAMPLE:
        return None
    return (f"only {count} sample{'s' if count != 1 else ''}: an accuracy measured on fewer "
            f"than {SMALL_SAMPLE} can be several points off (give more with --samples or a "
            "larger folder)")
