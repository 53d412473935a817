"""Open a Model for a task wrapper, refusing a file exported for another task by name."""

from __future__ import annotations

import os
from typing import Any

from ..errors import SpecError
from ..runtime.model import Model
from ..spec import ModelSpec

__all__ = ["open_for_task"]


def open_for_task(
    model: str | os.PathLike[str] | Model,
    device: str,
    threads: int | None,
    model_options: dict[str, Any],
    *,
    tasks: tuple[str, ...],
    role: str,
    export_hint: str,
) -> tuple[Model, ModelSpec]:
    """The Model (opened from a path if need be) and its spec, which must be for ``tasks``.

    Shared by the task wrappers (Classifier, Generator): each needs the dlinfer spec,
    and a model exported for another task is refused by name rather than misread.
    """
    opened = model if isinstance(model, Model) else Model(model, device, threads, **model_options)
    spec = opened.spec
    if spec is None:
        raise SpecError(
            f"{opened.path} has no dlinfer metadata; export it with "
            f"`{export_hint}`, or use dlinfer.Model directly"
        )
    if spec.task not in tasks:
        raise SpecError(f"{opened.path} is a {spec.task} model, not a {role}")
    return opened, spec
