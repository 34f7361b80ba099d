"""Binary addition as a sequence task: data from a PRNG key, encoding, and exact-sum accuracy.

Bits are fed least-significant first, one bit of each operand per step (2 inputs), and the
target at step t is bit t of the sum (1 output). Two ranges:

- `full_range=False` (the 2015 setting): operands in [0, 2^(n-1)), the sum fits n bits, T = n.
- `full_range=True`: operands in [0, 2^n), the sum needs n+1 bits; a final step with both
  input bits 0 reads out the last carry, T = n + 1.

Operands are handled as bit arrays, never as integers, so any width works (256 bits and more).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Batch(NamedTuple):
    inputs: jax.Array  # [T, B, 2] in {0, 1}
    targets: jax.Array  # [T, B, 1] in {0, 1}


def sequence_length(bits: int, full_range: bool) -> int:
    return bits + 1 if full_range else bits


def operand_count(bits: int, full_range: bool) -> int:
    """How many distinct operand pairs there are."""
    return 4 ** (bits if full_range else bits - 1)


def add_bits(a_bits: jax.Array, b_bits: jax.Array) -> jax.Array:
    """The bits of a + b for `[T, ...]` 0/1 arrays, LSB first, truncated to T bits (ripple carry)."""

    def full_adder(carry, ab):
        a, b = ab
        total = a + b + carry
        return total // 2, total % 2

    a_bits, b_bits = a_bits.astype(jnp.int32), b_bits.astype(jnp.int32)
    _, s = jax.lax.scan(full_adder, jnp.zeros_like(a_bits[0]), (a_bits, b_bits))
    return s


def from_operand_bits(a_bits: jax.Array, b_bits: jax.Array, full_range: bool, dtype=jnp.float32) -> Batch:
    """A batch from operand bits `[n, B]` (LSB first); the top bit must already be 0 unless `full_range`."""
    if full_range:
        pad = jnp.zeros_like(a_bits[:1])
        a_bits, b_bits = jnp.concatenate([a_bits, pad]), jnp.concatenate([b_bits, pad])
    s = add_bits(a_bits, b_bits)
    inputs = jnp.stack([a_bits, b_bits], axis=-1).astype(dtype)
    return Batch(inputs, s[..., None].astype(dtype))


def sample(
    key: jax.Array, batch_size: int, bits: int, full_range: bool = False, dtype=jnp.float32, own_bits=None
) -> Batch:
    """`batch_size` examples with operands uniform over their range (uniform iid bits).

    Step t's bits are drawn from `key` folded with t, so the draws of a narrower width are the
    first steps of a wider one's: with `own_bits` (traced, at most `bits`), the examples are those
    `sample(key, batch_size, own_bits, ...)` draws, followed by steps of zero inputs and zero targets
    up to the length of `bits` (the fused launcher's padded time steps, masked out of the loss)."""
    steps = jnp.arange(bits)
    draws = jax.lax.map(lambda t: jax.random.bernoulli(jax.random.fold_in(key, t), 0.5, (2, batch_size)), steps)
    n = bits if own_bits is None else own_bits
    kept = steps < (n if full_range else n - 1)  # not full_range: operands < 2^(n-1)
    ab = draws.astype(jnp.int32) * kept[:, None, None]  # [bits, 2, B]
    return from_operand_bits(ab[:, 0], ab[:, 1], full_range, dtype)


def int_bits(values, bits: int) -> np.ndarray:
    """Python/NumPy integers -> `[bits, len(values)]` 0/1, least significant first (two's
    complement low bits for a negative one)."""
    values = [int(v) & ((1 << bits) - 1) for v in np.asarray(values, dtype=object).ravel()]
    width = (bits + 7) // 8
    raw = np.frombuffer(b"".join(v.to_bytes(width, "little") for v in values), np.uint8).reshape(len(values), width)
    return np.unpackbits(raw, axis=1, count=bits, bitorder="little").T.astype(np.int32)


def bits_int(bits_array) -> list[int]:
    """`[T, B]` 0/1 (LSB first) -> B Python integers (exact at any width)."""
    columns = np.packbits(np.asarray(bits_array).astype(bool).T, axis=1, bitorder="little")  # [B, ceil(T / 8)]
    return [int.from_bytes(row.tobytes(), "little") for row in columns]


def from_operand_bits_np(a_bits: np.ndarray, b_bits: np.ndarray, full_range: bool, dtype=np.float32) -> Batch:
    """The host-side (NumPy) twin of `from_operand_bits`, for fixed evaluation sets."""
    if full_range:
        pad = np.zeros_like(a_bits[:1])
        a_bits, b_bits = np.concatenate([a_bits, pad]), np.concatenate([b_bits, pad])
    s = np.zeros_like(a_bits)
    carry = np.zeros_like(a_bits[0])
    for t in range(a_bits.shape[0]):
        total = a_bits[t] + b_bits[t] + carry
        s[t], carry = total % 2, total // 2
    inputs = np.stack([a_bits, b_bits], axis=-1).astype(dtype)
    return Batch(inputs, s[..., None].astype(dtype))


def encode(a, b, bits: int, full_range: bool = False, dtype=np.float32) -> Batch:
    """The batch (NumPy arrays) for given integer operands."""
    limit = 2**bits if full_range else 2 ** (bits - 1)
    for v in list(np.ravel(a)) + list(np.ravel(b)):
        if not 0 <= int(v) < limit:
            raise ValueError(f"operand {v} is outside [0, {limit}) for bits={bits}, full_range={full_range}")
    return from_operand_bits_np(int_bits(a, bits), int_bits(b, bits), full_range, dtype)


def all_pairs(bits: int, full_range: bool = False, dtype=np.float32) -> Batch:
    """Every operand pair as one batch, a-major (use only when `operand_count` is small)."""
    n = 2**bits if full_range else 2 ** (bits - 1)
    grid = np.arange(n, dtype=np.int64)
    bit_rows = ((grid[None, :] >> np.arange(bits)[:, None]) & 1).astype(np.int32)  # [bits, n]
    a_bits = np.repeat(bit_rows, n, axis=1)
    b_bits = np.tile(bit_rows, (1, n))
    return from_operand_bits_np(a_bits, b_bits, full_range, dtype)


def random_pairs(seed: int, count: int, bits: int, full_range: bool = False, dtype=np.float32) -> Batch:
    """`count` fixed random operand pairs (a constant evaluation set, the same in every run)."""
    rng = np.random.default_rng(seed)
    ab = rng.integers(0, 2, size=(2, bits, count), dtype=np.int8)  # int8: a wide, large set stays small
    if not full_range:
        ab[:, bits - 1] = 0
    return from_operand_bits_np(ab[0], ab[1], full_range, dtype)


def eval_batch(bits: int, full_range: bool, max_samples: int, seed: int = 0, dtype=np.float32) -> Batch:
    """All pairs when there are at most `max_samples`, else `max_samples` fixed random pairs."""
    if operand_count(bits, full_range) <= max_samples:
        return all_pairs(bits, full_range, dtype)
    return random_pairs(seed, max_samples, bits, full_range, dtype)


def exact_pairs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """`[B]` booleans: every output bit of the example is right (`logits > 0` reads as 1). `[T, B, 1]`."""
    return jnp.all((logits > 0) == (targets > 0.5), axis=(0, 2))


def exact_accuracy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Fraction of examples whose every output bit is right. `[T, B, 1]`."""
    return jnp.mean(exact_pairs(logits, targets))
