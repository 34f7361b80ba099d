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

from rnn_jax.build import build_cell
from rnn_jax.cells import Cell, stack
from rnn_jax.build import ModelConfig
from rnn_jax.tasks.charlm.corpus import Streams, batch_at, num_batches
from rnn_jax.model import DenseParams, dense
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
      apply: `(params, ids [T, *batch], carry=None, *, dropout_key=None, unroll=None)
        -> (carry, logits [T, *batch, V])`; dropout only when `dropout_key` is given.
      step: `(params, carry, ids [*batch]) -> (carry, logits [*batch, V])`, one character.
    """

    init: Callable[..., CharLMParams]
    initial_carry: Callable[..., Any]
    apply: Callable[..., Any]
    step: Callable[..., Any]
    vocab_size: int
    cells: tuple


class Batch(NamedTuple):
    inputs: jax.Array  # [B, T] int32
    targets: jax.Array  # [B, T] int32, the next character of each input
    carry: Any  # the recurrent state at the start of the batch
    dropout_key: Optional[jax.Array]


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

    def apply(params: CharLMParams, ids, carry=None, *, dropout_key=None, unroll: Optional[int] = None):
        xs = params.embed[ids]  # [T, *batch, E]
        if carry is None:
            carry = initial_carry(ids.shape[1:], params.embed.dtype)
        keys = jax.random.split(dropout_key, len(cells)) if dropout_key is not None else (None,) * len(cells)
        new_carry = []
        for cell, p, c, k in zip(cells, params.layers, carry, keys):
            c, xs = unroll_cell(cell, p, xs, c, unroll=unroll)  # [T, *batch, H]
            xs = dropout(xs, dropout_rate, k)
            new_carry.append(c)
        return tuple(new_carry), readout.apply(params.readout, xs)

    def step(params: CharLMParams, carry, ids):
        carry, h = layers.apply(params.layers, carry, params.embed[ids])  # x: [*batch, E]
        return carry, readout.apply(params.readout, h)

    return CharLM(init, initial_carry, apply, step, vocab_size, cells)


def build_char_lm(model: ModelConfig, vocab_size: int, embedding: int, dropout_rate: float = 0.0, dtype=None, platform=None) -> CharLM:
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


def make_loss(model: CharLM, unroll: Optional[int] = None) -> Callable:
    """`loss_fn(params, batch) -> (loss, carry)`, the form `rnn_jax.training.make_step` takes;
    the carry at the end of the batch is the aux output, to start the next batch from."""

    def loss_fn(params, batch: Batch):
        carry, logits = model.apply(params, batch.inputs.T, batch.carry, dropout_key=batch.dropout_key, unroll=unroll)
        return cross_entropy(logits, batch.targets.T), carry  # logits [T, B, V]

    return loss_fn


def reset_at_epoch_start(k, carry, zero_carry):
    """The carry to start batch `k` from: zeros at the start of the stream, where rows restart."""
    return jax.tree.map(lambda z, c: jnp.where(k == 0, z, c), zero_carry, carry)


def make_evaluate(model: CharLM, seq_len: int, unroll: Optional[int] = None) -> Callable:
    """`evaluate(params, streams) -> nats`: mean loss over all batches of `streams`, in order,
    the state carried from batch to batch as in training, no dropout."""

    def evaluate(params, streams: Streams):
        B = streams.inputs.shape[0]
        carry0 = model.initial_carry((B,), params.embed.dtype)

        def body(carry, k):
            inputs, targets = batch_at(streams, k, seq_len)
            carry, logits = model.apply(params, inputs.T, carry, unroll=unroll)
            return carry, cross_entropy(logits, targets.T)

        _, losses = jax.lax.scan(body, carry0, jnp.arange(num_batches(streams, seq_len)))
        return jnp.mean(losses)

    return evaluate


def generate(model: CharLM, params, prime, key, temperature, length: int, unroll: Optional[int] = None):
    """`length` characters after the ids `prime [P]` (P >= 1), sampled one at a time with `lax.scan`.

    Each character is drawn from `softmax(logits / temperature)`; `temperature == 0` takes the
    argmax. `temperature` may be traced; `length` is static. Returns ids `[length]`.
    """
    carry, logits = model.apply(params, prime, unroll=unroll)  # logits [P, V]
    temperature = jnp.asarray(temperature, logits.dtype)

    def pick(logits, k):
        sampled = jax.random.categorical(k, logits / jnp.maximum(temperature, 1e-6))
        return jnp.where(temperature > 0, sampled, jnp.argmax(logits)).astype(jnp.int32)

    def body(state, i):
        carry, logits = state
        c = pick(logits, jax.random.fold_in(key, i))
        carry, logits = model.step(params, carry, c)
        return (carry, logits), c

    _, ids = jax.lax.scan(body, (carry, logits[-1]), jnp.arange(length))
    return ids
