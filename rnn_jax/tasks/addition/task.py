"""Binary addition as a driver task: `task.seeds` replicas trained at once, exactness checked
after every chunk, length generalisation measured at the end.

Replica i is the single run with `seed=seed+i`: its own PRNG keys, its own data. One replica
runs without `vmap` (whose batched matmuls cost more than plain ones when there is nothing to
batch); several run under `vmap` in the same program.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from rnn_jax.build import build_model, dtype_of
from rnn_jax.cells import ElmanParams
from rnn_jax.model import DenseParams, ModelParams
from rnn_jax.tasks.addition import carry_chain, reference2015
from rnn_jax.tasks.addition import data as addition
from rnn_jax.tasks.addition.evaluate import (
    EVAL_PIECE_FLOATS,
    EvalSet,
    eval_set,
    exact_fraction,
    generalization_pairs,
    packed_exact,
)
from rnn_jax.tasks.base import (
    DIVERGED,
    SOLVED,
    TRAINING,
    ConfigError,
    Display,
    Program,
    Report,
    Task,
    TaskSpec,
    check_at_least,
    check_choice,
    check_has_model,
    log_every,
    parameter_count,
    to_host,
    values_kept_per_step,
)
from rnn_jax.training import TrainState, init_state, make_chunk, make_step

LOSSES = ("bce", "mse")
DATA = ("jax", "numpy2015")


@dataclass(frozen=True)
class AdditionTask:
    """Binary addition, least-significant bit first: 2 inputs and 1 output per step."""

    name: str = "addition"
    bits: int = 8  # sequence length n
    full_range: bool = (
        False  # False: operands in [0, 2^(n-1)), the sum fits n bits (2015); True: [0, 2^n), n+1 output bits
    )
    loss: str = "bce"  # bce (logits) | mse (0.5 * sum of squared errors of sigmoid outputs, the 2015 loss)
    # jax: operands from the run's PRNG key | numpy2015: replay the 2015 script's numpy stream (init and operands)
    data: str = "jax"
    eval_samples: int = 65536  # all operand pairs when there are at most this many, else this many random pairs
    generalization_bits: List[int] = field(default_factory=lambda: [16, 32, 64, 256])
    generalization_samples: int = 4096  # random operand pairs per generalisation width
    seeds: int = 1  # independent replicas trained at once with vmap (the run's parallel axis)
    batch_size: int = 64  # operand pairs per replica and step
    stop_when_solved: bool = True  # stop at the first evaluation where every seed is exact
    # After training (tasks/addition/carry_chain.py): adversarial sums (2^n-1)+1, +0, +(2^n-1) and
    # carries propagated over runs of L bits, for each n = L here; [] skips both.
    carry_chain_lengths: List[int] = field(default_factory=lambda: [10, 100, 1000])
    carry_chain_samples: int = 4  # random pairs per carry-run length
    long_random_bits: List[int] = field(default_factory=lambda: [1000])  # random operands this wide; [] skips
    long_random_samples: int = 4  # random pairs per width
    chain_piece_steps: int = 4096  # time steps evaluated at once (memory: S x R x steps x hidden values)


def check(cfg) -> None:
    task, m = cfg.task, cfg.model
    check_has_model(cfg)
    check_at_least("task.bits", task.bits, 2)  # 1 bit has one operand pair, 0 + 0: nothing to learn
    check_choice("task.loss", task.loss, LOSSES)
    check_choice("task.data", task.data, DATA)
    check_at_least("task.eval_samples", task.eval_samples, 1)
    check_at_least("task.generalization_samples", task.generalization_samples, 1)
    check_at_least("task.seeds", task.seeds, 1)
    check_at_least("task.batch_size", task.batch_size, 1)
    if not task.generalization_bits:
        raise ConfigError(
            "task.generalization_bits", list(task.generalization_bits), "must name at least one width, e.g. [16, 32]"
        )
    for n in task.generalization_bits:
        check_at_least("task.generalization_bits", n, 1)
    for key in ("carry_chain_lengths", "long_random_bits"):
        for n in getattr(task, key):
            check_at_least(f"task.{key}", n, 1)
    for key in ("carry_chain_samples", "long_random_samples", "chain_piece_steps"):
        check_at_least(f"task.{key}", getattr(task, key), 1)
    if task.data == "numpy2015" and not (m.cell == "elman" and m.layers == 1 and task.batch_size == 1):
        raise ConfigError(
            "task.data",
            task.data,
            "numpy2015 replays the 2015 script: needs model=elman, model.layers=1, task.batch_size=1",
        )


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


def addition_loss(name: str, logits, targets):
    """ "bce": mean binary cross-entropy on logits. "mse": the 2015 loss, 0.5 * sum over bits of
    (target - sigmoid(logit))^2, averaged over the batch (its gradient is the 2015 update)."""
    if name == "bce":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))
    err = targets - jax.nn.sigmoid(logits)
    examples = math.prod(targets.shape[1:-1])  # 1 for a single unbatched example [T, 1]
    return 0.5 * jnp.sum(err**2) / examples


class AdditionState(NamedTuple):
    train: TrainState  # leaves [S, ...]: one replica per seed
    data_key: Any  # [S, ...] raw "rbg" key data for task.data=jax; None when replaying numpy2015


class AdditionConsts(NamedTuple):
    eval: Optional[EvalSet]  # the fixed evaluation set, in pieces; None: train only (the benchmark)
    replay: Optional[addition.Batch]  # numpy2015: every training example, [S, steps, T, 2]; else None


class AdditionTally(NamedTuple):
    """Per seed, after the latest chunk."""

    finite: list  # [S] bool: every loss so far finite
    accuracy: list  # [S] exact-sum accuracy on the evaluation set (0 for a non-finite seed)
    steps_to_solve: list  # [S] the first logged step at which the seed was exact, or None


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


def addition_model(cfg, platform: Optional[str] = None):
    """The model of an addition run: the cell stack, a 1-wide readout, a sigmoid."""
    return build_model(cfg.model, 1, output_activation="sigmoid", dtype=dtype_of(cfg.train.dtype), platform=platform)


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


def draw(setup: Setup, data_key, start, k: int) -> addition.Batch:
    """One replica's batches of steps `start .. start + k - 1`, `[k, T, B, ...]`: one draw of
    `k * B` pairs from the key folded with `start`."""
    key = jax.random.fold_in(jax.random.wrap_key_data(data_key, impl="rbg"), start)
    batch = addition.sample(key, k * setup.batch_size, setup.bits, setup.full_range, setup.dtype)  # [T, k*B, ...]
    return jax.tree.map(lambda a: jnp.moveaxis(a.reshape(a.shape[0], k, setup.batch_size, a.shape[-1]), 1, 0), batch)


def train_replica(setup: Setup, train: TrainState, batches: addition.Batch, eval_pieces: Optional[EvalSet]):
    """One replica over `batches` (`[k, ...]`): its state, losses `[k]` and exact accuracy after."""

    def loss_fn(params, batch: addition.Batch):
        _, logits = setup.model.logits(params, batch.inputs, unroll=setup.unroll)
        return addition_loss(setup.loss, logits, batch.targets), None

    step = make_step(loss_fn, setup.optimizer)

    def step_loss(state: TrainState, batch):
        state, (loss, _) = step(state, batch)
        return state, loss

    train, losses = make_chunk(step_loss, setup.unroll_steps)(train, batches)
    accuracy = None if eval_pieces is None else exact_fraction(setup.model, train.params, eval_pieces, setup.unroll)
    return train, losses, accuracy


def chunk(setup: Setup, state: AdditionState, consts: AdditionConsts, start, k: int):
    """Steps `start .. start + k - 1` of the replicas in `state`, then each one's exact accuracy:
    outputs `(losses [S, k], accuracy [S])`. Batches are drawn by `lax.map` over replicas, not
    vmap (see `initial_state`); one replica runs without `vmap`, whose batched matmuls cost more
    than plain ones when there is nothing to batch."""
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


def partition(replay: bool) -> tuple:
    """Replicas (and their replayed examples) over the devices' data axis; the evaluation set whole."""
    return P("data"), AdditionConsts(P(), P("data") if replay else None)


def sharded_chunk(setup: Setup, mesh, replay: bool, state, consts, start, k: int):
    """`chunk` with each device running the replicas it holds, exactly as one device runs them all."""
    state_spec, consts_spec = partition(replay)
    run = jax.shard_map(
        lambda s, c, i: chunk(setup, s, c, i, k),
        mesh=mesh,
        in_specs=(state_spec, consts_spec, P()),
        out_specs=(P("data"), P("data")),
        check_vma=False,
    )
    return run(state, consts, start)


def fresh_tally(seeds: int) -> AdditionTally:
    return AdditionTally([True] * seeds, [0.0] * seeds, [None] * seeds)


def observe(tally: AdditionTally, outputs, step: int) -> tuple[AdditionTally, dict]:
    """Folds a chunk's `(losses [S, k], accuracy [S])` into the tally: a seed whose loss was ever
    non-finite stays so, with accuracy 0; a seed exact at `step` for the first time is solved
    there. Fields: the mean finite loss and the mean accuracy (and each seed's, for several)."""
    losses, accuracy = (np.asarray(x) for x in outputs)
    finite = np.asarray(tally.finite) & np.isfinite(losses).all(axis=1)
    accuracy = np.where(finite, accuracy, 0.0)
    solved = [
        s if s is not None else (step if ok and a == 1.0 else None)
        for s, ok, a in zip(tally.steps_to_solve, finite, accuracy)
    ]
    mean_loss = losses.mean(axis=1)
    fields = {"loss": _mean_finite(mean_loss), "accuracy": float(accuracy.mean())}
    if len(finite) > 1:
        fields["per_seed"] = {"loss": [float(x) for x in mean_loss], "accuracy": [float(a) for a in accuracy]}
    return AdditionTally(finite.tolist(), accuracy.tolist(), solved), fields


def status(stop_when_solved: bool, tally: AdditionTally) -> str:
    """DIVERGED when no seed is finite; SOLVED, with `stop_when_solved`, when every seed was exact
    at the latest evaluation; else TRAINING."""
    if not any(tally.finite):
        return DIVERGED
    if stop_when_solved and all(a == 1.0 for a in tally.accuracy):
        return SOLVED
    return TRAINING


def seed_figures(tally: AdditionTally, seeds: list[int], params_finite, widths: list[int], per_width) -> dict:
    """The summary's per-seed figures from the tally and the generalisation accuracies
    (`per_width [S, len(widths)]`): a seed whose losses or final weights are not finite counts
    as accuracy 0 everywhere and is listed in `failed_seeds`."""
    finite = np.asarray(tally.finite) & np.asarray(params_finite)
    accuracy = np.where(finite, tally.accuracy, 0.0)
    per_width = np.where(finite[:, None], np.asarray(per_width), 0.0)
    figures = {
        "status": "ok" if finite.any() else "failed",
        "seed_values": list(seeds),
        "final_accuracy": float(accuracy.mean()),
        "per_seed_accuracy": [float(a) for a in accuracy],
        "success_rate": float(np.mean(accuracy == 1.0)),
        "steps_to_solve": list(tally.steps_to_solve),
        "failed_seeds": [s for s, ok in zip(seeds, finite) if not ok],
        "generalization": {str(n): float(a) for n, a in zip(widths, per_width.mean(axis=0))},
        "generalization_per_seed": {str(n): [float(a) for a in per_width[:, j]] for j, n in enumerate(widths)},
    }
    if not finite.any():
        figures["error"] = "loss became NaN or Inf in every seed"
    return figures


class Evaluation(NamedTuple):
    """The end-of-training evaluation of replicas (leading axis R), on the host."""

    per_width: np.ndarray  # [R, widths]: exact fraction of random sums per generalisation width
    params_finite: np.ndarray  # [R]: every final weight finite
    chains: Optional[list]  # per carry-chain group, [R, pairs] exact sums; None: none configured
    compile_seconds: float
    chain_seconds: float


def evaluate(setup: Setup, task: AdditionTask, platform: str, params) -> Evaluation:
    """Generalisation to `task.generalization_bits` and the carry-chain evaluation of every
    replica of `params` (leaves `[R, ...]`), each program compiled once for all of them."""
    replicas = jax.tree.leaves(params)[0].shape[0]
    width = setup.state_size * replicas  # hidden values per evaluated step
    widths, packed = generalization_pairs(task.generalization_bits, task.generalization_samples, task.full_range, width)
    pairs = len(widths) * task.generalization_samples

    def exact_and_finite(params, packed):  # a last update can leave NaN weights behind a finite loss
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(w)) for w in jax.tree.leaves(params)]))
        return packed_exact(setup.model, params, packed, pairs), finite

    t0 = time.perf_counter()
    program = (
        jax.jit(jax.vmap(exact_and_finite, in_axes=(0, None)))
        .lower(params, packed)
        .compile(compiler_options=compile_options(platform))
    )
    compile_seconds = time.perf_counter() - t0
    per_pair, params_finite = to_host(program(params, packed))
    per_width = np.asarray(per_pair).reshape(replicas, len(widths), task.generalization_samples).mean(axis=2)
    chains, t0 = chain_groups(task), time.perf_counter()
    if chains:
        # On the host first: the chain program is compiled for one device, the state may be split.
        on_host = jax.device_put(to_host(params))
        chains = carry_chain.exact(setup.model, on_host, chains, task.chain_piece_steps, compile_options(platform))
    return Evaluation(per_width, np.asarray(params_finite), chains or None, compile_seconds, time.perf_counter() - t0)


def chain_groups(task: AdditionTask) -> list:
    return carry_chain.groups(
        task.carry_chain_lengths, task.carry_chain_samples, task.long_random_bits, task.long_random_samples
    )


def summary_fields(task: AdditionTask, seeds: list[int], tally: AdditionTally, e: Evaluation) -> dict:
    """The task's part of `summary.json` from the tally and the evaluation of these seeds."""
    widths = sorted(set(task.generalization_bits))
    fields = seed_figures(tally, seeds, e.params_finite, widths, e.per_width)
    fields["eval_pairs"] = min(addition.operand_count(task.bits, task.full_range), task.eval_samples)
    fields["compile_seconds"] = e.compile_seconds
    if e.chains is not None:
        finite = np.asarray(tally.finite) & e.params_finite
        fields.update(carry_chain.summary(chain_groups(task), e.chains, finite), carry_chain_seconds=e.chain_seconds)
    return fields


def summarize(
    setup: Setup, task: AdditionTask, seeds: list[int], platform: str, state: AdditionState, tally: AdditionTally
) -> dict:
    return summary_fields(task, seeds, tally, evaluate(setup, task, platform, state.train.params))


def make_setup(cfg, optimizer: optax.GradientTransformation, platform: Optional[str]) -> Setup:
    """The device program's static part for `cfg`."""
    return Setup(
        addition_model(cfg, platform),
        optimizer,
        cfg.task.loss,
        cfg.task.bits,
        cfg.task.full_range,
        cfg.task.batch_size,
        dtype_of(cfg.train.dtype),
        cfg.model.unroll,
        cfg.train.unroll_steps,
        cfg.model.hidden * cfg.model.layers,
    )


def make(cfg, optimizer: optax.GradientTransformation, devices) -> Task:
    """The task; with several devices, each trains `task.seeds / devices` of the replicas."""
    task: AdditionTask = cfg.task
    if task.seeds % devices.count:
        raise ConfigError(
            "task.seeds",
            task.seeds,
            f"must be a multiple of the {devices.count} devices (backend.devices), each training as many replicas",
        )
    dtype, platform, replay = dtype_of(cfg.train.dtype), devices.platform, task.data == "numpy2015"
    setup = make_setup(cfg, optimizer, platform)
    seeds = [cfg.seed + i for i in range(task.seeds)]
    width = setup.state_size * len(seeds)
    consts = AdditionConsts(
        jax.device_put(eval_set(task.bits, task.full_range, task.eval_samples, width)),
        replay_stream(cfg, seeds, dtype) if replay else None,
    )
    if replay:
        init = partial(initial_state_2015, setup, seeds, cfg.model.hidden)
    else:
        init = partial(initial_state, setup, seeds, compile_options(platform, one_shot=True))
    program = Program(
        init=init,
        chunk=partial(chunk, setup) if devices.count == 1 else partial(sharded_chunk, setup, devices.mesh, replay),
        consts=consts,
        partition=partition(replay),
        compile_options=compile_options(platform),
    )
    report = Report(
        tally=fresh_tally(len(seeds)),
        observe=observe,
        status=partial(status, task.stop_when_solved),
        summarize=partial(summarize, setup, task, seeds, platform),
    )
    return Task(program, report, display=Display(progress=("loss", "accuracy")))


def replay_stream(cfg, seeds: list[int], dtype) -> addition.Batch:
    """Every training example of the 2015 numpy stream, `[S, steps, T, 2]`: one unbatched example
    per step (batch_size is 1, and a batch axis of size 1 would turn every vector-matrix product
    into a slower matrix-matrix one)."""
    inputs, targets = [], []
    for seed in seeds:
        _, operands = reference2015.stream(seed, cfg.train.steps, cfg.task.bits, cfg.model.hidden)
        batch = addition.encode(
            operands[:, 0], operands[:, 1], cfg.task.bits, False, np.dtype(dtype)
        )  # [T, steps, ...]
        inputs.append(np.moveaxis(batch.inputs, 1, 0))
        targets.append(np.moveaxis(batch.targets, 1, 0))
    return jax.device_put(addition.Batch(np.stack(inputs), np.stack(targets)))


def _mean_finite(x) -> float:
    x = np.asarray(x)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def memory(cfg) -> dict:
    """The peak's largest parts in bytes (see `rnn_jax.driver.memory`), from the config alone."""
    task, t, m = cfg.task, cfg.train, cfg.model
    T = addition.sequence_length(task.bits, task.full_range)
    pairs = min(addition.operand_count(task.bits, task.full_range), task.eval_samples)
    size = 8 if t.dtype == "float64" else 4
    S, B, K = cfg.task.seeds, cfg.task.batch_size, min(log_every(t), t.steps)
    model = addition_model(cfg)
    params = parameter_count(lambda key: model.init(key, 2))
    float_step = jax.ShapeDtypeStruct((2,), dtype_of(t.dtype))
    per_step = values_kept_per_step(lambda key: model.init(key, 2), lambda p, x: model.logits(p, x)[1], float_step)
    widths = sum(n + task.full_range for n in set(task.generalization_bits))
    return {
        ("the evaluation set", "task.eval_samples"): 2
        * pairs
        * T
        * 3,  # uint8 bits, in pieces on the host and on the device
        ("the generalisation pairs", "task.generalization_samples"): 3 * 8 * task.generalization_samples * widths,
        ("a chunk's batches", "train.log_every"): S * K * B * T * 3 * size,
        ("the backward pass", "task.batch_size"): 2 * S * B * T * per_step * size,
        ("an evaluation piece", "task.eval_samples"): min(pairs * T * m.hidden * m.layers * S, EVAL_PIECE_FLOATS)
        * per_step
        // (m.hidden * m.layers)
        * size,
        ("parameters and optimizer state", "model.hidden"): 4 * S * params * size,
        ("a carry-chain piece", "task.chain_piece_steps"): S
        * max(3, task.carry_chain_samples, task.long_random_samples)
        * min(task.chain_piece_steps, chain_steps(task))
        * per_step
        * size,
    }


def chain_steps(task: AdditionTask) -> int:
    """The longest sequence of the carry-chain evaluation (`carry_chain`), 0 when there is none."""
    runs = [2 * carry_chain.PAD + n + 3 for n in task.carry_chain_lengths]
    return max([*runs, *(n + 1 for n in task.long_random_bits)], default=0)


SPEC = TaskSpec(
    AdditionTask,
    check,
    make,
    memory,
    parallel=lambda cfg: ("task.seeds", cfg.task.seeds),
    objective="success_rate",
    description="binary addition: exact-sum accuracy over seeds, length generalisation",
)
