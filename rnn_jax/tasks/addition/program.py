"""Binary addition's device program: `task.seeds` replicas trained at once, pure functions of arrays.

Replica i is the single run with `seed=seed+i`: its own PRNG keys, its own data. One replica
runs without `vmap` (whose batched matmuls cost more than plain ones when there is nothing to
batch); several run under `vmap` in the same program. The replica axis is the program's vmap
axis: runs of one shape stack along it (`rnn_jax.driver.job_groups`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from rnn_jax.cells import ElmanParams
from rnn_jax.model import DenseParams, ModelParams
from rnn_jax.tasks.addition import data as addition
from rnn_jax.tasks.addition import reference2015
from rnn_jax.tasks.addition.evaluate import EvalSet, exact_fraction
from rnn_jax.training import TrainState, init_state, make_chunk, make_step


def compile_options(platform: str, one_shot: bool = False) -> dict:
    """XLA options for the addition programs. On the CPU, XLA's older fusion emitters compile a
    training chunk in about half the time (measured: 0.25 vs 0.51 s for the 2015 replication,
    0.6-1.0 vs 1.6-1.7 s for the default job's chunk) and run it at 0.98x-1.2x the time; addition
    runs are short, so compiling dominates. A program that runs once (`one_shot`) is also built
    without LLVM's optimisations, which halves its compile time again."""
    options = {"xla_cpu_use_fusion_emitters": False} if platform == "cpu" else {}
    if one_shot:
        options["xla_backend_optimization_level"] = 0
    return options


def addition_loss(name: str, logits, targets, steps=None):
    """ "bce": mean binary cross-entropy on logits. "mse": the 2015 loss, 0.5 * sum over bits of
    (target - sigmoid(logit))^2, averaged over the batch (its gradient is the 2015 update).
    With `steps` (traced), only the first `steps` time steps count, as if the rest were not there."""
    examples = math.prod(targets.shape[1:-1])  # 1 for a single unbatched example [T, 1]
    if name == "bce":
        losses = optax.sigmoid_binary_cross_entropy(logits, targets)
    else:
        losses = 0.5 * (targets - jax.nn.sigmoid(logits)) ** 2
    if steps is None:
        return jnp.mean(losses) if name == "bce" else jnp.sum(losses) / examples
    kept = jnp.where((jnp.arange(targets.shape[0]) < steps).reshape((-1,) + (1,) * (targets.ndim - 1)), losses, 0.0)
    return jnp.sum(kept) / (steps * examples * targets.shape[-1] if name == "bce" else examples)


class AdditionState(NamedTuple):
    train: TrainState  # leaves [S, ...]: one replica per seed
    data_key: Any  # [S, ...] raw "rbg" key data for task.data=jax; None when replaying numpy2015


class Widths(NamedTuple):
    """Per replica, when replicas of several bit widths train at `Setup.bits` (a fused family)."""

    bits: jax.Array  # [S] int32: the replica's own task.bits
    eval_set: jax.Array  # [S] int32: its evaluation set among the stacked ones (`stacked_eval_sets`)


class AdditionConsts(NamedTuple):
    eval: Optional[EvalSet]  # the fixed evaluation set, in pieces; None: train only (the benchmark)
    replay: Optional[addition.Batch]  # numpy2015: every training example, [S, steps, T, 2]; else None
    widths: Optional[Widths] = None  # replicas of several widths: `eval` is stacked, one set per width


class Setup(NamedTuple):
    """What the device program is built from (static: functions and Python numbers)."""

    model: Any  # rnn_jax.model.Model
    optimizer: optax.GradientTransformation
    loss: str  # LOSSES
    bits: int
    full_range: bool
    batch_size: int
    dtype: Any
    unroll: Optional[int]  # the cell scan's lax.scan unroll (model.unroll)
    unroll_steps: int  # the training scan's unroll (train.unroll_steps)
    state_size: int  # hidden values a replica keeps per step (hidden x layers): sizes evaluation pieces


def params_from_2015(weights: reference2015.Weights2015, dtype) -> ModelParams:
    """The 2015 script's synapse_0, synapse_h, synapse_1 as rnn_jax parameters."""
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return ModelParams(
        ElmanParams(cast(weights.w_in), cast(weights.w_rec), None), DenseParams(cast(weights.w_out), None)
    )


def replica(setup: Setup, seed) -> tuple:
    """Replica `seed`'s initial training state and data key. Keys use the "rbg" PRNG (XLA's
    RngBitGenerator): on the CPU, threefry's bit generator takes seconds to compile."""
    init_key, data_key = jax.random.split(jax.random.key(seed, impl="rbg"))
    return init_state(setup.model.init(init_key, 2), setup.optimizer), jax.random.key_data(data_key)


def replicas(setup: Setup, seeds: jax.Array) -> AdditionState:
    """`replica` of each of `seeds` (`[S]` ints), stacked; traceable (`jax.eval_shape` gives the shapes)."""
    return AdditionState(*jax.lax.map(partial(replica, setup), seeds))


def initial_state(setup: Setup, seeds: list[int], compile_options: Optional[dict] = None) -> AdditionState:
    """Every replica's initial state, as each single run with `seed=s` starts. `lax.map`, not
    vmap: the rbg PRNG draws other numbers when batched. The program runs once."""
    program = jax.jit(partial(replicas, setup))
    s = jnp.asarray(seeds)
    return program.lower(s).compile(compiler_options=compile_options)(s)


def initial_state_2015(setup: Setup, seeds: list[int], hidden: int) -> AdditionState:
    """`task.data=numpy2015`: the 2015 script's initial weights of each seed; no data key."""
    states = [
        init_state(params_from_2015(reference2015.stream(s, 0, setup.bits, hidden)[0], setup.dtype), setup.optimizer)
        for s in seeds
    ]
    return AdditionState(jax.tree.map(lambda *xs: jnp.stack(xs), *states), None)


def draw(setup: Setup, data_key, start, k: int, own_bits=None) -> addition.Batch:
    """One replica's batches of steps `start .. start + k - 1`, `[k, T, B, ...]`: one draw of
    `k * B` pairs from the key folded with `start` (at `own_bits`, padded to `setup.bits`)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(data_key, impl="rbg"), start)
    batch = addition.sample(key, k * setup.batch_size, setup.bits, setup.full_range, setup.dtype, own_bits)
    return jax.tree.map(lambda a: jnp.moveaxis(a.reshape(a.shape[0], k, setup.batch_size, a.shape[-1]), 1, 0), batch)


def train_replica(
    setup: Setup,
    train: TrainState,
    batches: addition.Batch,
    eval_pieces: Optional[EvalSet],
    own_bits=None,
    eval_set=None,
):
    """One replica over `batches` (`[k, ...]`): its state, losses `[k]` and exact accuracy after.
    With `own_bits`, the replica's width (traced) when it trains among wider ones: the steps past
    its own sequence length count in neither the loss nor the accuracy, which is measured on
    `eval_pieces[eval_set]` (stacked evaluation sets, `stacked_eval_sets`)."""
    steps = None if own_bits is None else own_bits + int(setup.full_range)

    def loss_fn(params, batch: addition.Batch):
        _, logits = setup.model.logits(params, batch.inputs, unroll=setup.unroll)
        return addition_loss(setup.loss, logits, batch.targets, steps), None

    step = make_step(loss_fn, setup.optimizer)

    def step_loss(state: TrainState, batch):
        state, (loss, _) = step(state, batch)
        return state, loss

    train, losses = make_chunk(step_loss, setup.unroll_steps)(train, batches)
    if eval_pieces is None:
        return train, losses, None
    return train, losses, exact_fraction(setup.model, train.params, eval_pieces, setup.unroll, steps, eval_set)


def chunk(setup: Setup, state: AdditionState, consts: AdditionConsts, start, k: int):
    """Steps `start .. start + k - 1` of the replicas in `state`, then each one's exact accuracy:
    outputs `(losses [S, k], accuracy [S])`. Batches are drawn by `lax.map` over replicas, not
    vmap (see `initial_state`); one replica runs without `vmap`, whose batched matmuls cost more
    than plain ones when there is nothing to batch."""
    if consts.widths is not None:  # replicas of several widths: each its own data, length and evaluation set
        xs = jax.lax.map(lambda a: draw(setup, a[0], start, k, a[1]), (state.data_key, consts.widths.bits))

        def own(train, batches, eval_sets, widths: Widths):
            return train_replica(setup, train, batches, eval_sets, widths.bits, widths.eval_set)

        train, losses, acc = jax.vmap(own, in_axes=(0, 0, None, 0))(state.train, xs, consts.eval, consts.widths)
        return AdditionState(train, state.data_key), (losses, acc)
    if consts.replay is not None:
        xs = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, k, axis=1), consts.replay)  # [S, k, ...]
    else:
        xs = jax.lax.map(lambda key: draw(setup, key, start, k), state.data_key)
    one = partial(train_replica, setup)
    if jax.tree.leaves(state.train)[0].shape[0] == 1:
        out = one(*jax.tree.map(lambda a: a[0], (state.train, xs)), consts.eval)
        train, losses, acc = jax.tree.map(lambda a: a[None], out)  # None stays None
    else:
        train, losses, acc = jax.vmap(one, in_axes=(0, 0, None))(state.train, xs, consts.eval)
    return AdditionState(train, state.data_key), (losses, acc)


def partition(replay: bool, widths: bool = False) -> tuple:
    """Replicas (their replayed examples, their widths) over the devices' data axis; the
    evaluation sets whole."""
    return P("data"), AdditionConsts(
        P(), P("data") if replay else None, Widths(P("data"), P("data")) if widths else None
    )


def sharded_chunk(setup: Setup, mesh, replay: bool, state, consts, start, k: int):
    """`chunk` with each device running the replicas it holds, exactly as one device runs them all."""
    state_spec, consts_spec = partition(replay, consts.widths is not None)
    run = jax.shard_map(
        lambda s, c, i: chunk(setup, s, c, i, k),
        mesh=mesh,
        in_specs=(state_spec, consts_spec, P()),
        out_specs=(P("data"), P("data")),
        check_vma=False,
    )
    return run(state, consts, start)
