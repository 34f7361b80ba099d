"""Softmax cross-entropy of a linear readout, fused and chunked for large vocabularies.

    z_n = h_n @ w + b                                   # [V] logits of row n
    loss = mean_n (logsumexp(z_n) - z_n[t_n])           # nats
    dL/dz_n = (softmax(z_n) - onehot(t_n)) / N
    dL/dh = dz @ w.T,   dL/dw = h.T @ dz,   dL/db = sum_n dz_n

`plain_cross_entropy` forms the whole `[N, V]` logits and differentiates `log_softmax` by
autodiff: the reference. `softmax_cross_entropy` never holds more than one chunk of rows' logits:
it walks the rows in chunks (`lax.scan`) and, when differentiated, computes the gradients in the
same pass as the loss, while the chunk's logits are still in cache (the loss is a scalar, so its
cotangent only scales them; the backward pass is three multiplications by it), as fused linear
cross-entropy kernels do (Liger Kernel's `LigerFusedLinearCrossEntropyLoss`; Wijmans et al.
2024, "Cut Your Losses in Large-Vocabulary Language Models"). Per chunk: the logits matmul, a
few elementwise passes (bias, max, exp, row and column sums) and two gradient matmuls that take
the unnormalised exponentials, the softmax's row scale applied to their small operands; the
one-hot half of the loss and of the gradients is gathered or scattered once for all rows.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp

# Rows per chunk when `chunk_size` is None: a chunk of logits of about this many floats (4 MiB of
# float32), so that logits, probabilities and their matmuls stay in the CPU's caches.
DEFAULT_CHUNK_ELEMENTS = 1 << 20


def default_chunk_size(n_rows: int, vocab_size: int) -> int:
    """Rows per chunk: about `DEFAULT_CHUNK_ELEMENTS` logits, at least 8 rows, at most `n_rows`,
    and chunks of near-equal size (so the last one is not mostly padding)."""
    c = max(8, DEFAULT_CHUNK_ELEMENTS // max(vocab_size, 1))
    if c >= n_rows:
        return max(n_rows, 1)
    n_chunks = -(-n_rows // c)
    return -(-n_rows // n_chunks)


def plain_cross_entropy(h, w, b, targets, *, matmul_dtype=None):
    """Mean cross-entropy in nats of `targets [N]` under `softmax(h [N, H] @ w [H, V] + b [V])`,
    through the whole `[N, V]` logits (`log_softmax` + `take_along_axis`): the reference."""
    logits = _matmul(h, w, matmul_dtype)  # [N, V]
    if b is not None:
        logits = logits + b[None, :]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, _out_of_range(targets, w.shape[1])[:, None], axis=-1))


def _out_of_range(targets, vocab_size: int):
    """`targets` with the negative ids moved to `V`: a gather reads an out-of-range id as NaN, but
    `-1` as `V - 1`, which would be a finite loss for a bad id."""
    return jnp.where(targets < 0, vocab_size, targets)


def softmax_cross_entropy(h, w, b, targets, *, chunk_size: Optional[int] = None, matmul_dtype=None):
    """Mean cross-entropy in nats of `targets` under `softmax(h @ w + b)`, chunked over rows.

    Args:
      h: `[N, H]` inputs of the readout (leading axes flattened by the caller).
      w: `[H, V]` readout weights.
      b: `[V]` bias, or None.
      targets: `[N]` integer ids in `[0, V)`. Their values are not checked (under `jit` they cannot be
        seen): an id outside `[0, V)` makes the loss NaN, never a finite loss (the gradients are then
        meaningless, and not all NaN).
      chunk_size: rows per chunk (any positive number; N need not be a multiple). None:
        `default_chunk_size(N, V)`.
      matmul_dtype: operand dtype of the three matmuls (e.g. `jnp.bfloat16`), accumulated in
        the dtype of `h`; softmax, logsumexp and the loss stay in that dtype. None: `h`'s dtype.

    Returns:
      The mean loss, a scalar of `h`'s dtype. Differentiable (reverse mode) with respect to
      `h`, `w` and `b`; the gradients are computed with the loss, chunk by chunk, so the whole
      `[N, V]` logits never exist. Not forward-mode differentiable (`jax.jvp`), as any
      `jax.custom_vjp`.
    """
    if h.ndim != 2:
        raise ValueError(f"h must be [N, H] (leading axes flattened by the caller), got shape {h.shape}")
    if w.ndim != 2 or w.shape[0] != h.shape[1]:
        raise ValueError(f"w must be [H, V] with H = {h.shape[1]} (h's last axis), got shape {w.shape}")
    if targets.shape != h.shape[:1]:
        raise ValueError(f"targets must be [N] = {h.shape[:1]} (h's first axis), got shape {targets.shape}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets must be integer ids, got dtype {targets.dtype}")
    N, V = h.shape[0], w.shape[1]
    if b is not None and b.shape != (V,):
        raise ValueError(f"b must be [V] = {(V,)} (w's last axis) or None, got shape {b.shape}")
    chunk = default_chunk_size(N, V) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    bias = jnp.zeros((V,), h.dtype) if b is None else b.astype(h.dtype)
    targets = _out_of_range(targets.astype(jnp.int32), V)
    return _fused(h, w.astype(h.dtype), bias, targets, min(chunk, N), matmul_dtype)


def _operand(x, dtype):
    """`x` cast to the matmul operand dtype (None: as it is)."""
    return x if dtype is None else x.astype(dtype)


def _matmul(x, y, dtype, contract=((1,), (0,))):
    """`x @ y` (or another contraction) with operands cast to `dtype`, accumulated in `x`'s dtype."""
    return jax.lax.dot_general(
        _operand(x, dtype), _operand(y, dtype), (contract, ((), ())), preferred_element_type=x.dtype
    )


def _chunked(h, chunk: int):
    """`(h [K, C, H], valid [K, C])`: the rows cut into K chunks of C, the last zero-padded."""
    N = h.shape[0]
    K = -(-N // chunk)
    pad = K * chunk - N
    if pad:
        h = jnp.concatenate([h, jnp.zeros((pad, h.shape[1]), h.dtype)])
    return h.reshape(K, chunk, -1), (jnp.arange(K * chunk) < N).reshape(K, chunk)


def _target_terms(h, w, b, targets):
    """`(z_t [N], w_t [N, H])`: the targets' logits and readout columns, gathered once for all
    rows (the one-hot half of the loss and of its gradients needs no pass over [N, V])."""
    w_t = jnp.take(w.T, targets, axis=0)  # [N, H]
    return jnp.sum(h * w_t, axis=-1) + jnp.take(b, targets), w_t


def _chunk_softmax(h_c, w, b, mm_dtype):
    """`(e [C, V], s [C], lse [C])`: e = exp(z - max z) for the chunk's logits z, s its row sums
    (softmax = e / s), lse = logsumexp(z)."""
    z = _matmul(h_c, w, mm_dtype) + b[None, :]  # [C, V]
    m = jnp.max(z, axis=-1, keepdims=True)  # for a stable exp
    e = jnp.exp(z - m)
    s = jnp.sum(e, axis=-1)
    return e, s, m[:, 0] + jnp.log(s)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused(h, w, b, targets, chunk, mm_dtype):
    """The mean loss alone (no gradient wanted): one chunk's logits at a time."""
    hs, vs = _chunked(h, chunk)
    z_t, _ = _target_terms(h, w, b, targets)
    w_op = _operand(w, mm_dtype)  # cast once, outside the loop

    def body(total, xs):
        h_c, v_c = xs
        _, _, lse = _chunk_softmax(h_c, w_op, b, mm_dtype)
        return total + jnp.sum(jnp.where(v_c, lse, 0.0)), None

    total, _ = jax.lax.scan(body, jnp.zeros((), h.dtype), (hs, vs))
    return (total - jnp.sum(z_t)) / h.shape[0]


def _fused_fwd(h, w, b, targets, chunk, mm_dtype):
    """The mean loss and, in the same pass over the chunks, its gradients (the residuals).

    The softmax half of each gradient is accumulated chunk by chunk from the unnormalised e
    (its row scale 1/s applied to the small operands: h's rows, dh's rows); the one-hot half
    (`- onehot(t)`) is added once at the end: rows of w gathered for dh, rows of h summed per
    target (`segment_sum`) for dw, target counts for db.
    """
    N, H = h.shape
    V = w.shape[1]
    hs, vs = _chunked(h, chunk)
    z_t, w_t = _target_terms(h, w, b, targets)
    w_op = _operand(w, mm_dtype)  # cast once, outside the loop

    def body(acc, xs):
        total, dw, db = acc
        h_c, v_c = xs
        e, s, lse = _chunk_softmax(h_c, w_op, b, mm_dtype)
        r = jnp.where(v_c, 1.0 / s, 0.0)[:, None]  # [C, 1]; zero on padding rows
        dh_c = _matmul(e, w_op, mm_dtype, ((1,), (1,))) * r  # [C, H] = softmax @ w.T
        dw = dw + _matmul(h_c * r, e, mm_dtype, ((0,), (0,)))  # [H, V] += h_c.T @ softmax
        db = db + _matmul(r[:, 0], e, None, ((0,), (0,)))  # [V] += column sums of softmax
        return (total + jnp.sum(jnp.where(v_c, lse, 0.0)), dw, db), dh_c

    zeros = (jnp.zeros((), h.dtype), jnp.zeros((H, V), w.dtype), jnp.zeros_like(b))
    (total, dw, db), dh = jax.lax.scan(body, zeros, (hs, vs))  # dh [K, C, H]
    dh = dh.reshape(-1, H)[:N] - w_t
    dw = dw - jax.ops.segment_sum(h, targets, V).T  # column t of w: minus the rows with target t
    db = db - jax.ops.segment_sum(jnp.ones((N,), b.dtype), targets, V)
    scale = 1.0 / N
    return (total - jnp.sum(z_t)) * scale, (dh * scale, dw * scale, db * scale)


def _fused_bwd(chunk, mm_dtype, grads, g):
    dh, dw, db = grads  # of the mean loss; the cotangent g only scales them
    return g * dh, g * dw, g * db, None  # None: targets are integers


_fused.defvjp(_fused_fwd, _fused_bwd)


# Readouts by name, `(h [N, H], w [H, V], b [V] | None, targets [N], **options) -> mean nats`.
READOUT_LOSSES = {
    "plain": plain_cross_entropy,
    "fused": softmax_cross_entropy,
}
