"""The addition task's evaluation sets: every pair or a fixed sample, in pieces, and the
generalisation pairs of several widths packed end to end so one scan evaluates them all."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.model import ModelParams, SequenceModel
from rnn_jax.tasks.addition import data as addition

GENERALIZATION_SEED = 2015  # fixed, so every run is evaluated on the same operand pairs


EVAL_PIECE_FLOATS = 2**24  # hidden-state values one evaluation piece may hold, all seeds together


def rows_per_piece(steps: int, width: int) -> int:
    """How many sequences of `steps` steps one evaluation piece runs at once, for `width` hidden
    values per step (hidden x layers x seeds): evaluating a wide task's whole set in one scan
    would hold `steps x pairs x width` values (gigabytes at a few hundred bits), so large sets
    are evaluated piece by piece."""
    return max(1, EVAL_PIECE_FLOATS // (steps * width))


def in_pieces(arrays: Any, rows: int, fill: Any) -> Any:
    """`[T, R, ...]` arrays (a NamedTuple of them) as `[n, T, rows, ...]`, the last piece padded
    with `fill` (a NamedTuple of fill values alike)."""
    R = jax.tree.leaves(arrays)[0].shape[1]
    rows = min(rows, R)
    n = -(-R // rows)

    def split(a, value):
        a = np.pad(a, [(0, 0), (0, n * rows - R)] + [(0, 0)] * (a.ndim - 2), constant_values=value)
        return np.moveaxis(a.reshape(a.shape[0], n, rows, *a.shape[2:]), 1, 0)

    return jax.tree.map(split, arrays, fill)


class EvalSet(NamedTuple):
    """The fixed evaluation set of a run, in pieces `[n, T, rows, ...]`; bits as uint8."""

    inputs: np.ndarray  # [n, T, rows, 2]
    targets: np.ndarray  # [n, T, rows, 1]
    valid: np.ndarray  # [n, rows] bool: False on the padding of the last piece


def eval_set(bits: int, full_range: bool, samples: int, width: int, steps: Optional[int] = None) -> EvalSet:
    """All operand pairs when there are at most `samples`, else that many fixed ones; with
    `steps`, each pair followed by steps of zeros up to that length (`stacked_eval_sets`)."""
    batch = addition.eval_batch(bits, full_range, samples, GENERALIZATION_SEED, np.uint8)
    T, N = batch.targets.shape[:2]
    if steps is not None:
        batch, T = jax.tree.map(lambda a: np.pad(a, [(0, steps - T)] + [(0, 0)] * (a.ndim - 1)), batch), steps
    whole = EvalSet(batch.inputs, batch.targets, np.ones((1, N), bool))  # valid: [1, N], split like the rest
    pieces = in_pieces(whole, rows_per_piece(T, width), EvalSet(0, 0, False))
    return pieces._replace(valid=pieces.valid[:, 0])


class PackedPairs(NamedTuple):
    """Operand pairs of several widths laid end to end in rows of one length `[T, R, ...]`, so one
    scan evaluates every width without paying for padded steps (a padded batch would run every
    width for as many steps as the longest: 2.8x the steps for widths 16, 32, 64 and 256)."""

    inputs: np.ndarray  # [T, R, 2]
    targets: np.ndarray  # [T, R, 1]
    starts: np.ndarray  # [T, R] bool: a pair starts here, and the carry restarts from zero
    pair: np.ndarray  # [T, R] int32: the pair each step belongs to, -1 on the unused tail of a row


def pack_pairs(batches: list[addition.Batch]) -> PackedPairs:
    """Packs full-length batches `[L_i, N_i, ...]`; pair ids run over the batches in order."""
    T = max(b.inputs.shape[0] for b in batches)
    parts, first_id = [], 0
    for b in batches:
        L, N = b.targets.shape[:2]
        per_row = T // L
        rows = -(-N // per_row)

        def lay(a, fill=0):  # [L, N, ...] -> [T, rows, ...]: pair r*per_row + j at steps j*L .. j*L+L-1 of row r
            rest = [(0, 0)] * (a.ndim - 2)
            a = np.pad(a, [(0, 0), (0, rows * per_row - N), *rest], constant_values=fill)
            a = np.moveaxis(a.reshape(L, rows, per_row, *a.shape[2:]), 2, 0).reshape(per_row * L, rows, *a.shape[2:])
            return np.pad(a, [(0, T - per_row * L), (0, 0), *rest], constant_values=fill)

        starts = np.zeros((L, N), bool)
        starts[0] = True
        pair = np.broadcast_to(first_id + np.arange(N, dtype=np.int32), (L, N))
        parts.append((lay(b.inputs), lay(b.targets), lay(starts), lay(pair, fill=-1)))
        first_id += N
    return PackedPairs(*(np.concatenate(xs, axis=1) for xs in zip(*parts)))


def generalization_pairs(bits: list[int], samples: int, full_range: bool, width: int) -> tuple[list[int], PackedPairs]:
    """`samples` fixed random pairs of every bit width in `bits`, packed, in pieces for
    `packed_exact`; returns the sorted widths and the pieces."""
    widths = sorted(set(bits))
    batches = [addition.random_pairs(GENERALIZATION_SEED + n, samples, n, full_range, np.uint8) for n in widths]
    packed = pack_pairs(batches)
    return widths, in_pieces(packed, rows_per_piece(packed.inputs.shape[0], width), PackedPairs(0, 0, False, -1))


def packed_exact(model: SequenceModel, params: ModelParams, pieces: PackedPairs, pairs: int) -> jax.Array:
    """Per pair `[pairs]`: 1.0 if every bit of its sum is right, from packed pairs in pieces
    (`in_pieces`, `[n, T, rows, ...]`, run one after another). The carry restarts at each pair's
    first step, so each pair sees exactly what `model.logits` would show it alone."""
    dtype = jax.tree.leaves(params.cell)[0].dtype

    def wrong_in(piece: PackedPairs):  # -> [pairs + 1]: 1 where a pair has a wrong bit; the last is padding
        # `resets`: the carry restarts at each pair's first step, inside the one scan.
        _, logits = model.logits(params, piece.inputs.astype(dtype), resets=piece.starts)  # bits may come as uint8
        wrong = (logits[..., 0] > 0) != (piece.targets[..., 0] > 0.5)
        ids = jnp.where(piece.pair < 0, pairs, piece.pair)
        return jax.ops.segment_max(wrong.ravel().astype(jnp.int32), ids.ravel(), num_segments=pairs + 1)

    wrong_pairs = jnp.max(jax.lax.map(wrong_in, pieces), axis=0)
    return 1.0 - wrong_pairs[:pairs].astype(jnp.float32)


def exact_fraction(
    model: SequenceModel, params: ModelParams, pieces: EvalSet, unroll=None, steps=None, group=None
) -> jax.Array:
    """The fraction of the set's pairs whose every sum bit `model` gets right (full-length
    sequences: no masks needed), piece after piece. With `steps` (traced), only the first `steps`
    steps are read: the rest pad a narrower width's pairs; with `group` (traced), the set is
    `pieces[group]` of stacked sets (`stacked_eval_sets`), taken a piece at a time, so that
    replicas under `vmap` never copy a whole set each."""
    dtype = jax.tree.leaves(params.cell)[0].dtype

    def exact_in(piece: EvalSet):
        _, logits = model.logits(params, piece.inputs.astype(dtype), unroll=unroll)  # bits come as uint8
        right = (logits > 0) == (piece.targets > 0.5)  # [T, rows, 1]
        if steps is not None:
            right |= (jnp.arange(logits.shape[0]) >= steps)[:, None, None]  # padded steps count as right
        return jnp.sum(jnp.all(right, axis=(0, 2)) & piece.valid)

    if group is not None:
        valid = pieces.valid[group]
        exact = jax.lax.map(lambda i: exact_in(jax.tree.map(lambda a: a[group, i], pieces)), jnp.arange(valid.shape[0]))
        return jnp.sum(exact) / jnp.sum(valid)
    return jnp.sum(jax.lax.map(exact_in, pieces)) / jnp.sum(pieces.valid)


def stacked_eval_sets(widths: list[int], full_range: bool, samples: int, width: int) -> EvalSet:
    """`eval_set` of each of `widths`, stacked `[G, n, T, rows, ...]` at the longest one's length
    and piece count: steps past a width's own are zeros (read with `exact_fraction(steps=)`),
    pieces past its own are not `valid`."""
    T = addition.sequence_length(max(widths), full_range)
    sets = [eval_set(n, full_range, samples, width, steps=T) for n in widths]
    rows = max(s.inputs.shape[2] for s in sets)  # a set smaller than a piece is one piece of its size
    count = max(s.inputs.shape[0] for s in sets)

    def fill(a):  # [n, T, r, ...] -> [count, T, rows, ...], zeros (not valid) after
        return np.pad(a, [(0, count - a.shape[0]), (0, 0), (0, rows - a.shape[2])] + [(0, 0)] * (a.ndim - 3))

    stacked = [
        EvalSet(
            fill(s.inputs),
            fill(s.targets),
            np.pad(s.valid, [(0, count - s.valid.shape[0]), (0, rows - s.valid.shape[1])]),
        )
        for s in sets
    ]
    return jax.tree.map(lambda *xs: np.stack(xs), *stacked)
