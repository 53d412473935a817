"""Token id sequences -> the (N, length) batch of a text model, padded like Keras."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..checks import check_allocation
from ..errors import EmptyBatchError, InputDtypeError, InputError, InputRankError, InputTypeError
from ..spec import InputSpec

__all__ = ["token_batch"]


def token_batch(sequences: Any, spec: InputSpec) -> np.ndarray:
    """Token id sequences as the model's (N, length) batch, padded like the training data.

    One sequence (a list or 1-D array of ids) or several (a list of them, or a 2-D
    integer array).  Shorter sequences are padded with 0 in front and longer ones
    keep their last ``length`` ids, as ``keras.utils.pad_sequences`` does by default.
    """
    length = spec.shape[1] if len(spec.shape) > 1 else None
    if isinstance(sequences, np.ndarray):
        rows = [sequences] if sequences.ndim == 1 else list(sequences)
        if sequences.ndim not in (1, 2):
            raise InputRankError(
                f"token ids must be one sequence (rank 1) or a batch (rank 2), got shape "
                f"{sequences.shape}")
    elif isinstance(sequences, Sequence) and not isinstance(sequences, (str, bytes)):
        flat = all(np.isscalar(x) or (isinstance(x, np.ndarray) and x.ndim == 0)
                   for x in sequences)
        rows = [sequences] if flat and len(sequences) else list(sequences)
    else:
        raise InputTypeError(f"token ids must be a sequence of ints or a list of sequences, "
                             f"got {type(sequences).__name__}")
    if not rows:
        raise EmptyBatchError("no sequences given: the batch is empty")
    arrays = []
    for i, row in enumerate(rows):
        try:
            arrays.append(np.asarray(row))
        except ValueError:  # a ragged nested list
            raise InputRankError(f"sequence {i}: token ids must be a flat sequence") from None
    width = length or max(a.size for a in arrays)
    batch = np.zeros(check_allocation((len(rows), width), np.dtype(spec.dtype).itemsize,
                                      f"input {spec.name!r}"), dtype=spec.dtype)
    for i, ids in enumerate(arrays):
        if ids.ndim != 1:
            raise InputRankError(f"sequence {i}: token ids must be a flat sequence, got shape "
                                 f"{ids.shape}")
        if ids.size and ids.dtype.kind not in "iu":
            raise InputDtypeError(f"sequence {i}: token ids must be integers, got dtype "
                                  f"{ids.dtype}")
        if ids.size and ids.min() < 0:
            raise InputError(f"sequence {i}: token ids must be >= 0, got {int(ids.min())}")
        if ids.size and ids.max() > np.iinfo(batch.dtype).max:
            raise InputError(f"sequence {i}: token id {int(ids.max())} does not fit "
                             f"{batch.dtype}")
        ids = ids[-width:]
        batch[i, width - len(ids):] = ids
    return batch
