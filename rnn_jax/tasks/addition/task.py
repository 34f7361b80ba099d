"""Training and evaluating binary addition: the runner behind `python -m rnn_jax.train task=addition`.

`make_trainer(cfg)` returns pure functions (init, sample, chunk, evaluate); `run` drives them:
it trains `train.seeds` replicas at once with `vmap`, `train.log_every` steps per compiled
`lax.scan` chunk, logs each chunk to `metrics.jsonl`, and writes `summary.json` and a checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax.tasks.addition import data as addition
from rnn_jax.tasks.addition import reference2015
from rnn_jax.driver.backend import current_platform
from rnn_jax.build import build_model, dtype_of
from rnn_jax.cells import ElmanParams
from rnn_jax.driver.checkpoint import save as save_checkpoint
from rnn_jax.driver.config import AdditionTask, Config, ConfigError
from rnn_jax.model import DenseParams, ModelParams, SequenceModel
from rnn_jax.driver.optim import make_optimizer
from rnn_jax.driver.rundir import MetricsLog, interrupts_deferred, require_fresh, write_summary
from rnn_jax.training import TrainState, init_state, make_chunk, make_step

GENERALIZATION_SEED = 2015  # fixed, so every run is evaluated on the same operand pairs


def compile_options(one_shot: bool = False) -> dict:
    """XLA options for the addition programs. On the CPU, XLA's older fusion emitters compile a
    training chunk in about half the time (measured: 0.25 vs 0.51 s for the 2015 replication,
    0.6-1.0 vs 1.6-1.7 s for the default job's chunk) and run it at 0.98x-1.2x the time; addition
    runs are short, so compiling dominates. A program that runs once (`one_shot`) is also built
    without LLVM's optimisations, which halves its compile time again."""
    options = {"xla_cpu_use_fusion_emitters": False} if current_platform() == "cpu" else {}
    if one_shot:
        options["xla_backend_optimization_level"] = 0
    return options


class Trainer(NamedTuple):
    """The pure functions of one replica; `run` vmaps them over seeds and jits them."""

    model: SequenceModel
    optimizer: optax.GradientTransformation
    init: Callable[[jax.Array], TrainState]  # init key -> state
    sample_chunk: Callable[[jax.Array, jax.Array, int], addition.Batch]  # (data key, first step, k) -> [k, ...] batches
    chunk: Callable[[TrainState, addition.Batch], tuple]  # (state, batches) -> (state, losses [k])


def addition_loss(name: str, logits, targets):
    """"bce": mean binary cross-entropy on logits. "mse": the 2015 loss, 0.5 * sum over bits of
    (target - sigmoid(logit))^2, averaged over the batch (its gradient is the 2015 update)."""
    if name == "bce":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))
    err = targets - jax.nn.sigmoid(logits)
    examples = math.prod(targets.shape[1:-1])  # 1 for a single unbatched example [T, 1]
    return 0.5 * jnp.sum(err**2) / examples


def make_trainer(cfg: Config) -> Trainer:
    task: AdditionTask = cfg.task
    dtype = dtype_of(cfg.train.dtype)
    model = build_model(cfg.model, 1, output_activation="sigmoid", dtype=dtype)
    optimizer = make_optimizer(cfg.optim, cfg.train.steps)
    unroll = cfg.model.unroll

    def loss_fn(params, batch: addition.Batch):
        _, logits = model.logits(params, batch.inputs, unroll=unroll)
        return addition_loss(task.loss, logits, batch.targets), None

    def init(key):
        return init_state(model.init(key, 2), optimizer)

    def sample_chunk(data_key, start, k: int):
        # One draw for the whole chunk: [T, k*B, ...] -> [k, T, B, ...].
        B = cfg.train.batch_size
        batch = addition.sample(jax.random.fold_in(data_key, start), k * B, task.bits, task.full_range, dtype)
        return jax.tree.map(lambda a: jnp.moveaxis(a.reshape(a.shape[0], k, B, a.shape[-1]), 1, 0), batch)

    step = make_step(loss_fn, optimizer)
    chunk = make_chunk(lambda state, batch: _drop_aux(step(state, batch)), cfg.train.unroll_steps)

    return Trainer(model, optimizer, init, sample_chunk, chunk)


def _init_replica(trainer: Trainer, seed):
    """Replica `seed`: its initial state and its data key (a run with `seed=s` equals replica s).

    Keys use the "rbg" PRNG (XLA's RngBitGenerator): on the CPU, the default threefry's bit
    generator takes seconds to compile, which would dominate a short run."""
    init_key, data_key = jax.random.split(jax.random.key(seed, impl="rbg"))
    return trainer.init(init_key), data_key


def _drop_aux(out):
    state, (loss, _) = out
    return state, loss


def params_from_2015(weights: reference2015.Weights2015, dtype) -> ModelParams:
    """The 2015 script's synapse_0, synapse_h, synapse_1 as rnn_jax parameters."""
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return ModelParams(ElmanParams(cast(weights.w_in), cast(weights.w_rec), None), DenseParams(cast(weights.w_out), None))


class Replicas(NamedTuple):
    """What `train.seeds` replicas start from: stacked states and their data source."""

    state: TrainState  # leaves [S, ...]
    data: Any  # task.data=jax: PRNG keys [S]; numpy2015: every training example, [S, steps, T, 2]


def init_replicas(cfg: Config, trainer: Trainer, seeds: list[int]) -> Replicas:
    if cfg.task.data == "numpy2015":
        return numpy2015_replicas(cfg, seeds, trainer)
    # lax.map, not vmap: the rbg PRNG draws other numbers when batched, and replica s must
    # equal a single run with seed=s. The program runs once, so it is compiled without LLVM's
    # optimisations, which halves its compile time.
    init = jax.jit(lambda s: jax.lax.map(lambda seed: _init_replica(trainer, seed), s))
    seeds = jnp.asarray(seeds)
    state, data_keys = init.lower(seeds).compile(compiler_options=compile_options(one_shot=True))(seeds)
    return Replicas(state, data_keys)


def numpy2015_replicas(cfg: Config, seeds: list[int], trainer: Trainer) -> Replicas:
    """Initial states and every training example replayed from the 2015 numpy stream."""
    dtype = np.dtype(dtype_of(cfg.train.dtype))
    states, inputs, targets = [], [], []
    for seed in seeds:
        weights, operands = reference2015.stream(seed, cfg.train.steps, cfg.task.bits, cfg.model.hidden)
        states.append(init_state(params_from_2015(weights, dtype), trainer.optimizer))
        batch = addition.encode(operands[:, 0], operands[:, 1], cfg.task.bits, False, dtype)  # [T, steps, ...]
        # One unbatched example per step, [steps, T, 2]: batch_size is 1, and a batch axis of
        # size 1 would turn every vector-matrix product into a slower matrix-matrix one.
        inputs.append(np.moveaxis(batch.inputs, 1, 0))
        targets.append(np.moveaxis(batch.targets, 1, 0))
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    return Replicas(state, jax.device_put(addition.Batch(np.stack(inputs), np.stack(targets))))


EVAL_PIECE_FLOATS = 2**24  # hidden-state values one evaluation piece may hold, all seeds together


def rows_per_piece(cfg: Config, steps: int) -> int:
    """How many sequences of `steps` steps one evaluation piece runs at once: evaluating a wide
    task's whole set in one scan would hold `steps x pairs x hidden` values per seed (gigabytes
    at a few hundred bits), so large sets are evaluated piece by piece."""
    per_row = steps * cfg.model.hidden * cfg.model.layers * cfg.train.seeds
    return max(1, EVAL_PIECE_FLOATS // per_row)


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


def eval_set(cfg: Config) -> EvalSet:
    """All operand pairs when there are at most `task.eval_samples`, else that many fixed ones."""
    task: AdditionTask = cfg.task
    batch = addition.eval_batch(task.bits, task.full_range, task.eval_samples, GENERALIZATION_SEED, np.uint8)
    T, N = batch.targets.shape[:2]
    whole = EvalSet(batch.inputs, batch.targets, np.ones((1, N), bool))  # valid: [1, N], split like the rest
    pieces = in_pieces(whole, rows_per_piece(cfg, T), EvalSet(0, 0, False))
    return pieces._replace(valid=pieces.valid[:, 0])


def make_chunk_runner(cfg: Config, trainer: Trainer) -> Callable:
    """`runner(state, data, start, eval_set, k) -> (state, losses [S, k], accuracy [S])`: steps
    start..start+k-1 of every replica, then each replica's exact accuracy on `eval_set` (an
    `EvalSet`, or None to skip it: accuracy is then None), in one program, jitted with `k`
    static. One replica runs without `vmap`, whose batched matmuls cost more than plain ones
    when there is nothing to batch. The state is not donated: it is small, and an interrupt must
    find the state of the last logged chunk intact to checkpoint it."""
    replay = cfg.task.data == "numpy2015"

    def batches(data, start, k):  # [S, k, T, B, ...]
        if replay:
            return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, k, axis=1), data)
        return jax.lax.map(lambda key: trainer.sample_chunk(key, start, k), data)  # not vmap: see init_replicas

    dtype = dtype_of(cfg.train.dtype)

    def accuracy(params, eval_set: EvalSet):
        def exact_in(piece: EvalSet):  # full-length sequences: no masks needed
            _, logits = trainer.model.logits(params, piece.inputs.astype(dtype), unroll=cfg.model.unroll)
            return jnp.sum(addition.exact_pairs(logits, piece.targets) & piece.valid)

        return jnp.sum(jax.lax.map(exact_in, eval_set)) / jnp.sum(eval_set.valid)

    def one(state, xs, eval_set):
        state, losses = trainer.chunk(state, xs)
        return state, losses, None if eval_set is None else accuracy(state.params, eval_set)

    def replicas(state, data, start, eval_set, k):
        xs = batches(data, start, k)
        if cfg.train.seeds == 1:
            out = one(*jax.tree.map(lambda a: a[0], (state, xs)), eval_set)
            return jax.tree.map(lambda a: a[None], out)
        return jax.vmap(one, in_axes=(0, 0, None))(state, xs, eval_set)

    return jax.jit(replicas, static_argnums=4)


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


def generalization_pairs(cfg: Config) -> tuple[list[int], PackedPairs]:
    """`generalization_samples` fixed random pairs of every width in `generalization_bits`, packed,
    in pieces for `packed_exact`."""
    task: AdditionTask = cfg.task
    widths = sorted(set(task.generalization_bits))
    batches = [addition.random_pairs(GENERALIZATION_SEED + n, task.generalization_samples, n, task.full_range, np.uint8) for n in widths]
    packed = pack_pairs(batches)
    return widths, in_pieces(packed, rows_per_piece(cfg, packed.inputs.shape[0]), PackedPairs(0, 0, False, -1))


def packed_exact(model: SequenceModel, params: ModelParams, pieces: PackedPairs, pairs: int) -> jax.Array:
    """Per pair `[pairs]`: 1.0 if every bit of its sum is right, from packed pairs in pieces
    (`in_pieces`, `[n, T, rows, ...]`, run one after another). The carry restarts at each pair's
    first step, so each pair sees exactly what `model.logits` would show it alone."""
    cell = model.cell
    dtype = jax.tree.leaves(params.cell)[0].dtype

    def wrong_in(piece: PackedPairs):  # -> [pairs + 1]: 1 where a pair has a wrong bit; the last is padding
        zero = cell.initial_carry((piece.inputs.shape[1],), dtype)

        def step(carry, x_start):
            x, start = x_start
            carry = jax.tree.map(lambda c0, c: jnp.where(start[:, None], c0, c), zero, carry)
            return cell.apply(params.cell, carry, x.astype(dtype))  # bits may come as uint8

        _, hs = jax.lax.scan(step, zero, (piece.inputs, piece.starts))
        logits = model.readout.apply(params.readout, hs)
        wrong = (logits[..., 0] > 0) != (piece.targets[..., 0] > 0.5)
        ids = jnp.where(piece.pair < 0, pairs, piece.pair)
        return jax.ops.segment_max(wrong.ravel().astype(jnp.int32), ids.ravel(), num_segments=pairs + 1)

    wrong_pairs = jnp.max(jax.lax.map(wrong_in, pieces), axis=0)
    return 1.0 - wrong_pairs[:pairs].astype(jnp.float32)


@dataclass
class Progress:
    """What the host knows between chunks, per seed."""

    seeds: list[int]
    done: int = 0
    accuracy: np.ndarray = None  # [S], 0 for a seed whose loss went non-finite
    finite: np.ndarray = None  # [S] bool: loss finite so far
    steps_to_solve: list = None  # [S]: first logged step at 100%, None if never
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    interrupted: bool = False

    def __post_init__(self):
        S = len(self.seeds)
        self.accuracy, self.finite, self.steps_to_solve = np.zeros(S), np.ones(S, dtype=bool), [None] * S

    def update(self, k: int, losses: np.ndarray, accuracy: np.ndarray) -> dict:
        """Takes one chunk's losses `[S, k]` and end-of-chunk accuracies `[S]`; returns its log record."""
        self.done += k
        self.finite &= np.isfinite(losses).all(axis=1)
        self.accuracy = np.where(self.finite, accuracy, 0.0)
        for i, solved in enumerate(self.finite & (self.accuracy == 1.0)):
            if solved and self.steps_to_solve[i] is None:
                self.steps_to_solve[i] = self.done
        mean_loss = losses.mean(axis=1)
        record = {
            "step": self.done,
            "loss": _mean_finite(mean_loss),
            "accuracy": float(self.accuracy.mean()),
            "elapsed": round(self.train_seconds + self.compile_seconds, 4),
        }
        if len(self.seeds) > 1:
            record["per_seed"] = {"loss": [float(x) for x in mean_loss], "accuracy": [float(a) for a in self.accuracy]}
        return record

    def all_exact(self) -> bool:
        """Every seed exact at the last evaluation (seeds train on after solving, and may drift)."""
        return bool(np.all(self.accuracy == 1.0))


def run(cfg: Config, run_dir: Path, device: dict) -> dict[str, Any]:
    """Trains, evaluates and records one addition run; returns the summary.

    An interrupt (Ctrl-C, SIGTERM) ends training at once; the run is then evaluated,
    checkpointed and summarised with `status: "interrupted"` before the interrupt goes on. One
    that comes while the run is still compiling leaves a summary with `steps: 0`; one that comes
    while the run is being evaluated and saved waits for that to end.
    """
    if cfg.train.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError("train.dtype", "float64", "needs jax_enable_x64 (rnn_jax.train.run sets it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    require_fresh(run_dir, "metrics.jsonl", "checkpoint", "summary.json")
    trainer = make_trainer(cfg)
    seeds = [cfg.seed + i for i in range(cfg.train.seeds)]
    progress = Progress(seeds)
    try:
        state = train(cfg, trainer, run_dir, progress)
    except KeyboardInterrupt:  # still compiling: nothing was trained, so nothing to evaluate or save
        write_summary(run_dir, {"status": "interrupted", "task": "addition", "cell": cfg.model.cell, "bits": cfg.task.bits, "hidden": cfg.model.hidden, "seeds": len(seeds), "steps": 0, **device})
        raise
    with interrupts_deferred():
        summary = summarize(cfg, trainer, state, progress, device)
        save_checkpoint(
            run_dir / "checkpoint",
            state.params,
            {"task": "addition", "seeds": seeds, "model": asdict(cfg.model), "bits": cfg.task.bits, "full_range": cfg.task.full_range, "dtype": cfg.train.dtype, "step": progress.done},
        )
        write_summary(run_dir, summary)
    if progress.interrupted:
        raise KeyboardInterrupt
    return summary


def train(cfg: Config, trainer: Trainer, run_dir: Path, progress: Progress) -> TrainState:
    """The host loop: one compiled chunk of `train.log_every` steps and an evaluation, one log line."""
    from tqdm.auto import tqdm

    task: AdditionTask = cfg.task
    t0 = time.perf_counter()
    state, data = init_replicas(cfg, trainer, progress.seeds)
    progress.compile_seconds += time.perf_counter() - t0  # almost all of it is compiling
    runner = make_chunk_runner(cfg, trainer)
    eval_data = jax.device_put(eval_set(cfg))
    compiled: dict[int, Any] = {}  # chunk length -> executable (the last chunk may be shorter)

    def chunk(state, k):
        args = (state, data, jnp.int32(progress.done), eval_data)
        if k not in compiled:
            t0 = time.perf_counter()
            compiled[k] = runner.lower(*args, k).compile(compiler_options=compile_options())
            progress.compile_seconds += time.perf_counter() - t0
        return compiled[k](*args)

    log = MetricsLog(run_dir)
    bar = tqdm(total=cfg.train.steps, desc=f"{cfg.model.cell} h{cfg.model.hidden} {task.bits}-bit", unit="step", disable=not cfg.train.progress, leave=False)
    try:
        while progress.done < cfg.train.steps:
            k = min(cfg.train.log_every, cfg.train.steps - progress.done)
            t0, compile_before = time.perf_counter(), progress.compile_seconds
            new_state, losses, accuracy = chunk(state, k)
            losses, accuracy = np.asarray(losses), np.asarray(accuracy)
            with interrupts_deferred():  # the state, the step count and the log line move together
                state = new_state
                progress.train_seconds += time.perf_counter() - t0 - (progress.compile_seconds - compile_before)
                record = progress.update(k, losses, accuracy)
                log.write(record)
            bar.update(k)
            bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
            if not progress.finite.any() or (cfg.train.stop_when_solved and progress.all_exact()):
                break
    except KeyboardInterrupt:
        # The chunk in flight is dropped; `state` is the one after the last logged chunk.
        progress.interrupted = True
    finally:
        bar.close()
    return state


def summarize(cfg: Config, trainer: Trainer, state: TrainState, progress: Progress, device: dict) -> dict[str, Any]:
    """The summary.json of a run, length generalisation included."""
    task: AdditionTask = cfg.task
    widths, packed = generalization_pairs(cfg)
    pairs = len(widths) * task.generalization_samples

    def exact_and_finite(params, packed):  # a last update can leave NaN weights behind a finite loss
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(w)) for w in jax.tree.leaves(params)]))
        return packed_exact(trainer.model, params, packed, pairs), finite

    t0 = time.perf_counter()
    evaluate = jax.jit(jax.vmap(exact_and_finite, in_axes=(0, None))).lower(state.params, packed).compile(compiler_options=compile_options())
    progress.compile_seconds += time.perf_counter() - t0
    per_pair, params_finite = evaluate(state.params, packed)
    progress.finite &= np.asarray(params_finite)
    progress.accuracy = np.where(progress.finite, progress.accuracy, 0.0)
    per_width = np.asarray(per_pair).reshape(len(progress.seeds), len(widths), task.generalization_samples).mean(axis=2)
    per_width = np.where(progress.finite[:, None], per_width, 0.0)
    status = "interrupted" if progress.interrupted else "ok" if progress.finite.any() else "failed"
    summary = {
        "status": status,
        "task": "addition",
        "cell": cfg.model.cell,
        "bits": task.bits,
        "hidden": cfg.model.hidden,
        "layers": cfg.model.layers,
        "optimizer": cfg.optim.name,
        "lr": cfg.optim.lr,
        "seeds": len(progress.seeds),
        "seed_values": progress.seeds,
        "steps": progress.done,
        "final_accuracy": float(progress.accuracy.mean()),
        "per_seed_accuracy": [float(a) for a in progress.accuracy],
        "success_rate": float(np.mean(progress.accuracy == 1.0)),
        "steps_to_solve": progress.steps_to_solve,
        "failed_seeds": [s for s, ok in zip(progress.seeds, progress.finite) if not ok],
        "eval_pairs": min(addition.operand_count(task.bits, task.full_range), task.eval_samples),
        "generalization": {str(n): float(a) for n, a in zip(widths, per_width.mean(axis=0))},
        "generalization_per_seed": {str(n): [float(a) for a in per_width[:, j]] for j, n in enumerate(widths)},
        "compile_seconds": round(progress.compile_seconds, 4),
        "train_seconds": round(progress.train_seconds, 4),
        "us_per_step": round(1e6 * progress.train_seconds / max(progress.done, 1), 3),
        **device,
    }
    if not progress.finite.any():
        summary["error"] = "loss became NaN or Inf in every seed"
    return summary


def _mean_finite(x) -> float:
    x = np.asarray(x)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan

