"""The generic training step and chunked loop, shared by the tasks.

A task supplies `loss_fn(params, batch) -> (loss, aux)`; `make_chunk` turns it into a pure
function that runs `k` optimizer steps with `lax.scan` over a stacked batch `[k, ...]`. The
caller jits (and vmaps over seeds) at the chunk level, so Python is touched once per chunk.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer steps taken


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """`step(state, batch) -> (state, (loss, aux))`: one gradient step on `loss_fn`."""

    def step(state: TrainState, batch):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), (loss, aux)

    return step


def make_chunk(step: Callable, unroll: int = 1) -> Callable:
    """`chunk(state, batches) -> (state, (losses, aux))`: `step` over the leading axis of `batches`."""

    def chunk(state: TrainState, batches):
        return jax.lax.scan(step, state, batches, unroll=unroll)

    return chunk
