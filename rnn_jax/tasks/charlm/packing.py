"""Poems as sequences: each poem of a one-poem-per-line corpus packed, whole, into rows of `T` steps.

A poem `p_1 .. p_n` is the segment of n + 1 steps

    inputs   \\n  p_1 ... p_n          the end-of-poem mark (the newline) begins it
    targets  p_1  p_2 ... \\n          and the model learns to end it with the mark

run from the initial state (`resets` is True at its first step: `rnn_jax.unroll(resets=)`
restarts the recurrence there, inside one scan). Segments are packed into rows best-fit
decreasing, so that rows are nearly full; the steps left over at a row's end are padding
(`valid` False), counted by `Packed.padding`. A poem longer than `T - 1` characters does not fit
and is left out (`pack` says how many). Every target of a poem, its end mark included, is
counted once, the same characters a stream over the same poems predicts, so bits per character
are comparable between `task.unit=line` and `task.unit=stream`.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple, Sequence

import numpy as np


class Packed(NamedTuple):
    """Rows of whole poems; every field `[R, T]`."""

    inputs: np.ndarray  # int32
    targets: np.ndarray  # int32
    resets: np.ndarray  # bool: a poem's first step
    valid: np.ndarray  # bool: a poem's step, not padding

    @property
    def padding(self) -> float:
        """The fraction of steps that are padding."""
        return 1.0 - float(np.mean(self.valid)) if self.valid.size else 0.0


def segments(poems: Sequence[np.ndarray], end_id: int) -> list:
    """`(inputs, targets)` of each poem (ids without the end mark): `[end, p...]`, `[p..., end]`."""
    end = np.array([end_id], np.int32)
    return [(np.concatenate([end, p]).astype(np.int32), np.concatenate([p, end]).astype(np.int32)) for p in poems]


def best_fit(lengths: Sequence[int], capacity: int) -> list:
    """Rows of item indices, each row's lengths summing to at most `capacity`: best-fit
    decreasing (the longest item first, each into the fullest row it fits). Items longer than
    `capacity` are not placed."""
    rows: list = []
    open_rows: list = []  # sorted (room left, row index)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        if n > capacity:
            continue
        j = bisect.bisect_left(open_rows, (n, -1))
        if j < len(open_rows):
            room, r = open_rows.pop(j)
        else:
            room, r = capacity, len(rows)
            rows.append([])
        rows[r].append(i)
        if room - n > 0:
            bisect.insort(open_rows, (room - n, r))
    return rows


def pack(poems: Sequence[np.ndarray], row_len: int, end_id: int, *, rows_multiple: int = 1) -> tuple[Packed, int]:
    """`(packed, left_out)`: the poems (id arrays, without end marks) in rows of `row_len` steps,
    their number padded with empty rows to a multiple of `rows_multiple`; `left_out` poems were
    longer than `row_len - 1` characters."""
    segs = segments(poems, end_id)
    rows = best_fit([len(x) for x, _ in segs], row_len)
    n_rows = -(-max(len(rows), 1) // rows_multiple) * rows_multiple
    inputs = np.full((n_rows, row_len), end_id, np.int32)
    targets = np.full((n_rows, row_len), end_id, np.int32)
    resets = np.zeros((n_rows, row_len), bool)
    valid = np.zeros((n_rows, row_len), bool)
    for r, members in enumerate(rows):
        t = 0
        for i in sorted(members):  # corpus order within a row
            x, y = segs[i]
            inputs[r, t : t + len(x)], targets[r, t : t + len(x)] = x, y
            resets[r, t] = True
            valid[r, t : t + len(x)] = True
            t += len(x)
    placed = sum(len(m) for m in rows)
    return Packed(inputs, targets, resets, valid), len(poems) - placed


def split_poems(text: str, val_fraction: float) -> tuple[list, list]:
    """`(train, val)` poems (non-empty lines of `text`): the poems that begin in the last
    `val_fraction` of the characters are the validation poems, the text `corpus.split` gives the
    stream's validation (less the poem cut at the split point, which is a training poem)."""
    n_val = int(round(len(text) * val_fraction))
    cut = len(text) - n_val
    train, val, start = [], [], 0
    for line in text.split("\n"):
        if line:
            (train if start < cut else val).append(line)
        start += len(line) + 1
    return train, val
