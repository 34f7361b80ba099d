"""The character-level language model (char-rnn): embedding -> layers of cells -> readout.

    x_t = E[c_t]                                  # [*batch, embedding]
    h^l_t, carry^l = cell^l(carry^l, dropout(h^{l-1}_t))   with h^0_t = x_t
    p(c_{t+1} | c_{<=t}) = softmax(dropout(h^L_t) @ W + b)

An embedding instead of char-rnn's one-hot input, so a vocabulary of thousands of characters
(Chinese) costs a table lookup. Dropout follows char-rnn: on every layer's output (the input
of the next layer, and of the readout), only when a key is given. Loss in nats per character;
`bits` converts to bits per character (bpc).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from rnn_jax.build import ModelConfig, build_cell
from rnn_jax.cells import Cell, stack
from rnn_jax.model import DenseParams, dense
from rnn_jax.softmax import READOUT_LOSSES, softmax_cross_entropy
from rnn_jax.tasks.charlm.corpus import Streams, batch_at, num_batches
from rnn_jax.unroll import unroll as unroll_cell


class CharLMParams(NamedTuple):
    embed: jax.Array  # [V, E]
    layers: tuple  # one cell's params per layer
    readout: DenseParams  # [H, V], [V]


class CharLM(NamedTuple):
    """Pure functions of the model.

    Attributes:
      init: `key -> CharLMParams`.
      initial_carry: `(batch_shape=(), dtype=None) -> carry`, a tuple with one carry per layer.
      apply: `(params, ids [T, *batch], carry=None, *, dropout_key=None, unroll=None, resets=None)
        -> (carry, logits [T, *batch, V])`; dropout only when `dropout_key` is given; `resets
        [T, *batch]` restarts every layer from `carry` (zeros when None) where True, so that one
        row holds several sequences (`rnn_jax.unroll`).
      step: `(params, carry, ids [*batch]) -> (carry, logits [*batch, V])`, one character.
      features: `apply` without the readout: `-> (carry, h [T, *batch, H])`, the (dropped-out)
        last layer's outputs, what the readout multiplies; for losses that fuse the readout
        with the softmax (`rnn_jax.softmax`).
    """

    init: Callable[..., CharLMParams]
    initial_carry: Callable[..., Any]
    apply: Callable[..., Any]
    step: Callable[..., Any]
    vocab_size: int
    cells: tuple
    features: Callable[..., Any]


class Batch(NamedTuple):
    inputs: jax.Array  # [B, T] int32
    targets: jax.Array  # [B, T] int32, the next character of each input
    carry: Any  # the recurrent state at the start of the batch
    dropout_key: Optional[jax.Array]
    resets: Optional[jax.Array] = None  # [B, T] bool: a poem starts here, from `carry` (task.unit=line)
    valid: Optional[jax.Array] = None  # [B, T] bool: a target of a poem, not padding (task.unit=line)


def dropout(x, rate: float, key):
    """Inverted dropout: zero each unit with probability `rate`, scale the rest by 1/(1-rate)."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def char_lm(
    cells: Sequence[Cell],
    vocab_size: int,
    embedding: int,
    *,
    dropout_rate: float = 0.0,
    readout_bias: bool = True,
    readout_init: str = "pytorch",
    dtype=None,
) -> CharLM:
    """A char-rnn over `vocab_size` characters from `cells` (one per layer, bottom first)."""
    cells = tuple(cells)
    layers = stack(cells)  # its initial_carry and per-step apply; `apply` below adds dropout between layers
    readout = dense(vocab_size, use_bias=readout_bias, init=readout_init, dtype=dtype)

    def init(key) -> CharLMParams:
        k_e, k_r, *k_layers = jax.random.split(key, 2 + len(cells))
        # N(0, 1) rows, as flax.linen.Embed: the first layer's fan-in scaled init sees unit inputs.
        embed = jax.random.normal(k_e, (vocab_size, embedding), dtype or jnp.float32)
        sizes = (embedding,) + tuple(c.hidden_size for c in cells[:-1])
        layers = tuple(c.init(k, n) for c, k, n in zip(cells, k_layers, sizes))
        return CharLMParams(embed, layers, readout.init(k_r, cells[-1].hidden_size))

    initial_carry = layers.initial_carry

    def features(params: CharLMParams, ids, carry=None, *, dropout_key=None, unroll: Optional[int] = None, resets=None):
        xs = params.embed[ids]  # [T, *batch, E]
        if carry is None:
            carry = initial_carry(ids.shape[1:], params.embed.dtype)
        keys = jax.random.split(dropout_key, len(cells)) if dropout_key is not None else (None,) * len(cells)
        new_carry = []
        for cell, p, c, k in zip(cells, params.layers, carry, keys):
            c, xs = unroll_cell(cell, p, xs, c, resets=resets, unroll=unroll)  # [T, *batch, H]
            xs = dropout(xs, dropout_rate, k)
            new_carry.append(c)
        return tuple(new_carry), xs

    def apply(params: CharLMParams, ids, carry=None, *, dropout_key=None, unroll: Optional[int] = None, resets=None):
        carry, h = features(params, ids, carry, dropout_key=dropout_key, unroll=unroll, resets=resets)
        return carry, readout.apply(params.readout, h)

    def step(params: CharLMParams, carry, ids):
        carry, h = layers.apply(params.layers, carry, params.embed[ids])  # x: [*batch, E]
        return carry, readout.apply(params.readout, h)

    return CharLM(init, initial_carry, apply, step, vocab_size, cells, features)


def build_char_lm(
    model: ModelConfig, vocab_size: int, embedding: int, dropout_rate: float = 0.0, dtype=None, platform=None
) -> CharLM:
    """`char_lm` with `model.layers` cells of the kind `model` describes."""
    one = dataclasses.replace(model, layers=1)
    cells = [build_cell(one, dtype, platform) for _ in range(model.layers)]
    return char_lm(
        cells,
        vocab_size,
        embedding,
        dropout_rate=dropout_rate,
        readout_bias=model.readout_bias,
        readout_init=model.readout_init,
        dtype=dtype,
    )


def cross_entropy(logits, targets):
    """Mean negative log-likelihood in nats of `targets [...]` under `logits [..., V]`."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


READOUT_CHOICES = ("auto", "plain", "fused")

# `readout="auto"` fuses the readout with the loss from this many characters on. Measured on the
# 2-core CPU with benchmarks/profile_charlm_step.py (the default recipe, whole training steps):
# fused and plain are equal within the noise at 99 characters (where "auto" keeps the program
# of the plain path), fused is faster from a few hundred on (about 2x at 6,041).
FUSED_READOUT_MIN_VOCAB = 256


def resolve_readout(readout: str, vocab_size: int) -> str:
    """ "plain" or "fused": what `readout` ("auto", "plain" or "fused") means at `vocab_size`."""
    if readout not in READOUT_CHOICES:
        raise ValueError(f"readout={readout!r} is not allowed; allowed: {', '.join(READOUT_CHOICES)}")
    if readout == "auto":
        return "fused" if vocab_size >= FUSED_READOUT_MIN_VOCAB else "plain"
    return readout


def make_nll(model: CharLM, unroll: Optional[int] = None, **readout) -> Callable:
    """`nll(params, inputs [T, *batch], targets [T, *batch], carry, dropout_key=None) -> (nats, carry)`:
    the mean loss of a batch, and the carry at its end.

    Keyword arguments (the readout options every loss and evaluation factory here forwards):
      readout: how the readout's loss is computed. "plain": the model's logits `[T, *batch, V]`,
        then `cross_entropy`. "fused": `rnn_jax.softmax.softmax_cross_entropy` of the last
        layer's outputs, which forms the logits `chunk_size` rows at a time and computes the
        readout's gradients with the loss. "auto": fused from `FUSED_READOUT_MIN_VOCAB`
        characters on. Both give the same loss and gradients, to rounding.
      chunk_size, matmul_dtype: options of the fused readout (`softmax_cross_entropy`);
        the plain readout ignores them.
    """
    options = readout_options(**readout)
    fused = resolve_readout(options["readout"], model.vocab_size) == "fused"
    chunk_size, matmul_dtype = options["chunk_size"], options["matmul_dtype"]
    packed = make_packed_nll(model, unroll, **options)

    def nll(params, inputs, targets, carry, dropout_key=None, resets=None, valid=None):
        if valid is not None:  # packed poems: the mean over the valid targets
            total, count = packed(params, inputs, targets, resets, valid, carry, dropout_key)
            return total / jnp.maximum(count, 1), carry
        if not fused:
            carry, logits = model.apply(params, inputs, carry, dropout_key=dropout_key, unroll=unroll)
            return cross_entropy(logits, targets), carry  # logits [T, B, V]
        carry, h = model.features(params, inputs, carry, dropout_key=dropout_key, unroll=unroll)  # [T, B, H]
        w, b = params.readout
        loss = softmax_cross_entropy(
            h.reshape(-1, h.shape[-1]), w, b, targets.reshape(-1), chunk_size=chunk_size, matmul_dtype=matmul_dtype
        )
        return loss, carry

    return nll


def readout_options(readout: str = "auto", chunk_size: Optional[int] = None, matmul_dtype=None) -> dict:
    """The readout options (`make_nll`) with their defaults; an unknown one is a TypeError."""
    return {"readout": readout, "chunk_size": chunk_size, "matmul_dtype": matmul_dtype}


def make_packed_nll(model: CharLM, unroll: Optional[int] = None, **readout) -> Callable:
    """`nll(params, inputs [T, *batch], targets, resets, valid, carry, dropout_key=None) -> (nats, count)`:
    the summed loss of the `valid` targets of rows that hold several sequences (poems), each
    restarted from `carry` where `resets` is True, and how many targets were valid.

    The readout sees every row, padding too, so that the fused readout (which has no mask) serves
    here as well: a padded row's features are set to zero and its target to 0, so its loss is the
    constant `logsumexp(b) - b[0]`, which is subtracted once per padded row. Its gradient, with
    respect to `b` alone, cancels the padded rows' own; nothing flows back into the cells from them.
    `readout`: the readout options of `make_nll`.
    """
    options = readout_options(**readout)
    kind, matmul_dtype = resolve_readout(options["readout"], model.vocab_size), options["matmul_dtype"]
    loss = READOUT_LOSSES[kind]
    options = {"chunk_size": options["chunk_size"]} if kind == "fused" else {}

    def nll(params, inputs, targets, resets, valid, carry, dropout_key=None):
        _, h = model.features(params, inputs, carry, dropout_key=dropout_key, unroll=unroll, resets=resets)  # [T, B, H]
        h = jnp.where(valid[..., None], h, jnp.zeros((), h.dtype)).reshape(-1, h.shape[-1])  # [N, H]
        w, b = params.readout
        n, count = h.shape[0], jnp.sum(valid)
        mean = loss(h, w, b, jnp.where(valid, targets, 0).reshape(-1), matmul_dtype=matmul_dtype, **options)
        bias = jnp.zeros((w.shape[1],), h.dtype) if b is None else b.astype(h.dtype)
        padded = jax.nn.logsumexp(bias) - bias[0]  # the loss of one padded row
        return mean * n - (n - count) * padded, count

    return nll


def make_loss(model: CharLM, unroll: Optional[int] = None, **readout) -> Callable:
    """`loss_fn(params, batch) -> (loss, carry)`, the form `rnn_jax.training.make_step` takes;
    the carry at the end of the batch is the aux output, to start the next batch from.
    `readout`: the readout options of `make_nll`."""
    nll = make_nll(model, unroll, **readout)

    def loss_fn(params, batch: Batch):
        resets, valid = (None, None) if batch.valid is None else (batch.resets.T, batch.valid.T)
        return nll(params, batch.inputs.T, batch.targets.T, batch.carry, batch.dropout_key, resets, valid)

    return loss_fn


def reset_at_epoch_start(k, carry, zero_carry):
    """The carry to start batch `k` from: zeros at the start of the stream, where rows restart."""
    return jax.tree.map(lambda z, c: jnp.where(k == 0, z, c), zero_carry, carry)


def make_evaluate(model: CharLM, seq_len: int, unroll: Optional[int] = None, **readout) -> Callable:
    """`evaluate(params, streams) -> nats`: mean loss over all batches of `streams`, in order,
    the state carried from batch to batch as in training, no dropout. `readout`: the readout
    options of `make_nll` (the fused readout's loss alone never forms the whole logits)."""
    nll = make_nll(model, unroll, **readout)

    def evaluate(params, streams: Streams):
        B = streams.inputs.shape[0]
        carry0 = model.initial_carry((B,), params.embed.dtype)

        def body(carry, k):
            inputs, targets = batch_at(streams, k, seq_len)
            loss, carry = nll(params, inputs.T, targets.T, carry)
            return carry, loss

        _, losses = jax.lax.scan(body, carry0, jnp.arange(num_batches(streams, seq_len)))
        return jnp.mean(losses)

    return evaluate


def make_evaluate_packed(model: CharLM, unroll: Optional[int] = None, **readout) -> Callable:
    """`evaluate(params, rows: Packed, batch_size) -> nats`: the mean loss over every valid target
    of packed rows (`rnn_jax.tasks.charlm.packing`), `batch_size` rows at a time (their number a
    multiple of it), each poem from the initial state, no dropout. `readout`: as `make_nll`."""
    nll = make_packed_nll(model, unroll, **readout)

    def evaluate(params, rows, batch_size: int):
        zero = model.initial_carry((batch_size,), params.embed.dtype)
        batches = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(-1, batch_size, x.shape[-1]), 1, 2), rows)  # [K, T, B]

        def body(acc, b):
            total, count = nll(params, b.inputs, b.targets, b.resets, b.valid, zero)
            return (acc[0] + total, acc[1] + count), None

        (total, count), _ = jax.lax.scan(body, (jnp.zeros((), params.embed.dtype), jnp.zeros((), jnp.int32)), batches)
        return total / jnp.maximum(count, 1)

    return evaluate


def generate(
    model: CharLM,
    params,
    prime,
    key,
    temperature,
    length: int,
    unroll: Optional[int] = None,
    reset_id: Optional[int] = None,
):
    """`length` characters after the ids `prime [P]` (P >= 1), sampled one at a time with `lax.scan`.

    Each character is drawn from `softmax(logits / temperature)`; `temperature == 0` takes the
    argmax. `temperature` may be traced; `length` and `reset_id` are static. With `reset_id` (the
    end-of-poem mark of a model trained with `task.unit=line`) the state restarts from zeros
    before that character is read, as in training, so each line is a poem of its own.
    Returns ids `[length]`.
    """
    carry, logits = model.apply(params, prime, unroll=unroll)  # logits [P, V]
    temperature = jnp.asarray(temperature, logits.dtype)
    zero = model.initial_carry((), logits.dtype)

    def pick(logits, k):
        sampled = jax.random.categorical(k, logits / jnp.maximum(temperature, 1e-6))
        return jnp.where(temperature > 0, sampled, jnp.argmax(logits)).astype(jnp.int32)

    def body(state, i):
        carry, logits = state
        c = pick(logits, jax.random.fold_in(key, i))
        if reset_id is not None:
            carry = jax.tree.map(lambda z, x: jnp.where(c == reset_id, z, x), zero, carry)
        carry, logits = model.step(params, carry, c)
        return (carry, logits), c

    _, ids = jax.lax.scan(body, (carry, logits[-1]), jnp.arange(length))
    return ids
