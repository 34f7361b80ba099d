"""Several addition jobs of one shape family trained as one compiled program (`hydra/launcher=fused`).

Jobs that differ only in `model.hidden`, `task.bits` and `seed` form a family (`family`). The
family trains at its largest hidden size H: each job's replicas are initialised at the job's own
size, exactly as the job alone draws them, then padded to H with zero weights into and out of the
padded units (`pad`). In real arithmetic a padded unit then stays 0, its gradients are 0, and so
are its updates (for every optimizer here: the moments of a zero gradient stay 0). Sums of fewer
bits are padded to the family's longest with time steps of zero inputs after the job's own, which
count in neither its loss nor its accuracy (`program.Widths`); each step's operand bits are drawn
from the job's key folded with the step, so its sums are those it draws alone. So each job trains
exactly as alone; in floating point only the order of some sums may differ. All jobs' replicas
are stacked along the addition program's replica axis and trained by one program
(`rnn_jax.tasks.addition.program.chunk`) compiled once per chunk length, split over the devices
`backend.devices` names as a single run splits its seeds. A job stops by its own
rule (`Report.status`): from then on its replicas are frozen (the program computes them, the
state keeps the old values), until the jobs left are restacked at their own smaller shape, when
that pays for compiling it (`regroup_pays`). At the end every replica is evaluated by one program, and each job
gets its own run directory as the driver writes it alone (`metrics.jsonl`, `summary.json`,
`checkpoints/last` at its own size, so `report`, resume and `verify` work unchanged).

Not grouped (each runs alone through `rnn_jax.driver.loop.run`): other tasks, the 2015 replay
(`task.data=numpy2015`), jobs that feed a tracker (`logger=`), jobs whose directory already holds
a checkpoint (a resume), and a family of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.driver.backend import select_backend
from rnn_jax.driver.checkpoint import Checkpoints
from rnn_jax.driver.config import Config
from rnn_jax.driver.loop import diverged_fields, run_figures, run_header
from rnn_jax.driver.optim import make_optimizer
from rnn_jax.driver.resume import checkpoint_meta, flat_settings
from rnn_jax.driver.rundir import MetricsLog, interrupts_deferred, run_lock, write_summary
from rnn_jax.tasks.addition import program as addition_program
from rnn_jax.tasks.addition import report as host
from rnn_jax.tasks.addition import task as addition
from rnn_jax.tasks.addition.data import sequence_length
from rnn_jax.tasks.addition.evaluate import stacked_eval_sets
from rnn_jax.tasks.addition.program import AdditionConsts, Widths
from rnn_jax.tasks.base import DIVERGED, SOLVED, log_every, place, to_host

FREE = ("model.hidden", "task.bits", "seed", "train.progress")  # what may differ within a family


def family(cfg: Config) -> Optional[str]:
    """The key shared by the jobs that can train as one program: every setting but `FREE`;
    None for a job that trains alone (not addition, the 2015 replay, or one that feeds a tracker:
    a family writes no tracker runs)."""
    if cfg.task.name != "addition" or cfg.task.data != "jax" or cfg.model is None:
        return None
    if any(section is not None for section in vars(cfg.logger).values()):
        return None
    settings = {k: v for k, v in flat_settings(dataclasses.asdict(cfg)).items() if not k.startswith(FREE)}
    return json.dumps(settings, sort_keys=True, default=str)


def _axis_map(own: int, padded: int, h: int, H: int) -> Optional[int]:
    """The number of hidden-sized blocks `g` of an axis of `own = g h` values padded to `g H`."""
    if own == padded:
        return None
    g = padded // H
    if g * H != padded or g * h != own:
        raise ValueError(f"an axis of {own} values at hidden {h} is not {padded} / {H} blocks of it")
    return g


def _per_block(leaf: np.ndarray, shape: tuple, h: int, H: int, grow: bool) -> np.ndarray:
    """`leaf` with each axis of `g` blocks of `h` (or `H`) values made `g` blocks of `H` (or `h`)."""
    out = np.asarray(leaf)
    for axis, (n, m) in enumerate(zip(out.shape, shape)):
        g = _axis_map(n, m, h, H) if grow else _axis_map(m, n, h, H)
        if g is None:
            continue
        blocks = out.reshape(*out.shape[:axis], g, n // g, *out.shape[axis + 1 :])
        if grow:
            widths = [(0, 0)] * blocks.ndim
            widths[axis + 1] = (0, H - h)
            blocks = np.pad(blocks, widths)
        else:
            blocks = np.take(blocks, np.arange(h), axis=axis + 1)
        out = blocks.reshape(*out.shape[:axis], m, *out.shape[axis + 1 :])
    return out


def pad(leaf: np.ndarray, shape: tuple, h: int, H: int) -> np.ndarray:
    """`leaf` (a job's array at hidden `h`) at `shape` (the family's, hidden `H`): each axis of
    `g h` values is `g` blocks of `h` (a cell's gates side by side), each block padded with zeros
    to `H`."""
    return _per_block(leaf, shape, h, H, grow=True)


def unpad(leaf: np.ndarray, shape: tuple, h: int, H: int) -> np.ndarray:
    """The inverse of `pad`: the job's own `shape` cut out of the family's array."""
    return _per_block(leaf, shape, h, H, grow=False)


class Job:
    """One job of a family: its config, directory, replicas' rows in the stacked state, tally."""

    def __init__(self, cfg: Config, run_dir: Path, tally, shapes):
        self.cfg, self.run_dir, self.tally, self.shapes = cfg, Path(run_dir), tally, shapes
        self.rows = slice(0)  # set by `_stack`
        self.seeds = [cfg.seed + i for i in range(cfg.task.seeds)]
        self.step, self.active, self.last_finite = 0, True, None
        self.final = None  # its own state, once it no longer trains with the others (host arrays)
        self.metrics = MetricsLog(run_dir)


def _padded(cfg: Config, hidden: int, bits: int) -> Config:
    model = dataclasses.replace(cfg.model, hidden=hidden)
    return dataclasses.replace(cfg, model=model, task=dataclasses.replace(cfg.task, bits=bits))


def _select(active: jax.Array, new, old):
    """`new` where the replica is active, else `old` (leaves `[R, ...]`)."""
    return jax.tree.map(lambda n, o: jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o), new, old)


def train_family(cfgs: Sequence[Config], run_dirs: Sequence[Path]) -> list[dict]:
    """Trains the jobs `cfgs` (one `family`, fresh directories `run_dirs`) as one program;
    returns each job's summary, written in its directory."""
    if len({family(c) for c in cfgs}) != 1 or family(cfgs[0]) is None:
        raise ValueError("train_family takes jobs of one family (rnn_jax.driver.job_groups.family)")
    with contextlib.ExitStack() as locks:
        for d in run_dirs:
            Path(d).mkdir(parents=True, exist_ok=True)
            locks.enter_context(run_lock(Path(d)))
        return _train_family(list(cfgs), [Path(d) for d in run_dirs])


class Stacked(NamedTuple):
    """Jobs' replicas stacked at one shape: the program that trains them and its inputs' layout."""

    hidden: int
    bits: int
    program: Any  # rnn_jax.tasks.base.Program of the stacked replicas
    setup: Any  # rnn_jax.tasks.addition.program.Setup at this shape
    consts: Any  # the program's constants, placed on the devices
    state_spec: Any
    shapes: Any  # the stacked state's shapes (`jax.eval_shape`)


def _stacked_program(cfgs: list[Config], hidden: int, bits: int, devices, optimizer) -> Stacked:
    """The program for `cfgs`' replicas stacked at `hidden` units and `bits`-bit sums: each job
    of fewer bits reads its own sums and evaluation set (`program.Widths`)."""
    first, replicas = cfgs[0], sum(c.task.seeds for c in cfgs)
    big = _padded(first, hidden, bits)
    family_cfg = dataclasses.replace(big, task=dataclasses.replace(big.task, seeds=replicas))
    program = addition.make(family_cfg, optimizer, devices).program
    setup = addition.make_setup(big, optimizer, devices.platform)
    consts, (state_spec, consts_spec) = program.consts, program.partition
    widths = sorted({c.task.bits for c in cfgs})
    if len(widths) > 1:  # each job at its own width: its own length and evaluation set
        own = [(c.task.bits, widths.index(c.task.bits)) for c in cfgs for _ in range(c.task.seeds)]
        eval_sets = stacked_eval_sets(
            widths, first.task.full_range, first.task.eval_samples, setup.state_size * replicas
        )
        consts = AdditionConsts(eval_sets, None, Widths(*np.asarray(own, np.int32).T))
        state_spec, consts_spec = addition_program.partition(False, widths=True)
    shapes = jax.eval_shape(partial(addition_program.replicas, setup), jax.ShapeDtypeStruct((replicas,), jnp.int32))
    consts = place(consts, devices.mesh, consts_spec)
    return Stacked(hidden, bits, program, setup, consts, state_spec, shapes)


def _stack(owns: list, jobs: list, stacked: Stacked, mesh):
    """The jobs' own states (on the host, at their own sizes) padded to `stacked`'s hidden size and
    stacked in order; each job's `rows` are set to its replicas' rows."""
    parts, row = [], 0
    for j, own in zip(jobs, owns):
        S, h = j.cfg.task.seeds, j.cfg.model.hidden
        parts.append(jax.tree.map(lambda leaf, s: pad(leaf, (S, *s.shape[1:]), h, stacked.hidden), own, stacked.shapes))
        j.rows, row = slice(row, row + S), row + S
    return place(jax.tree.map(lambda *xs: np.concatenate(xs), *parts), mesh, stacked.state_spec)


def _arithmetic(jobs: list, hidden: int, bits: int) -> int:
    """A training step's arithmetic for `jobs` stacked at `hidden` units and `bits` bits, in
    proportion: replicas x time steps x a hidden x hidden product."""
    replicas = sum(j.cfg.task.seeds for j in jobs)
    return replicas * sequence_length(bits, jobs[0].cfg.task.full_range) * hidden * (hidden + 1)


def regroup_pays(old: int, new: int, step_seconds: float, steps_left: int, compile_seconds: float) -> bool:
    """Whether to train the jobs left at their own smaller shape (`new` arithmetic per step, against
    `old`): when the time it saves, counting half the steps left (a job may stop before), is more
    than twice the time to compile the smaller program (measured: the current one's)."""
    saved = (1 - new / old) * step_seconds * steps_left / 2
    return saved > 2 * compile_seconds


def _train_family(cfgs: list[Config], run_dirs: list[Path]) -> list[dict]:
    t_start = time.perf_counter()
    first = cfgs[0]
    jax.config.update("jax_enable_x64", first.train.dtype == "float64")
    replicas = sum(c.task.seeds for c in cfgs)
    b = first.backend
    devices, device_record = select_backend(b.name, b.compilation_cache, str(b.devices), None, ("seeds", replicas))
    platform, H = devices.platform, max(c.model.hidden for c in cfgs)
    optimizer = make_optimizer(first.optim, first.train.steps)
    family = _stacked_program(cfgs, H, max(c.task.bits for c in cfgs), devices, optimizer)
    compile_seconds = 0.0

    # Each job's replicas at its own size, as the job alone starts them (one program for all),
    # padded to H and stacked.
    own_setups = [addition.make_setup(cfg, optimizer, platform) for cfg in cfgs]
    seeds = [jnp.asarray([cfg.seed + i for i in range(cfg.task.seeds)]) for cfg in cfgs]
    t0 = time.perf_counter()
    init = jax.jit(lambda seeds: [addition_program.replicas(s, x) for s, x in zip(own_setups, seeds)])
    init = init.lower(seeds).compile(compiler_options=addition_program.compile_options(platform, one_shot=True))
    compile_seconds += time.perf_counter() - t0
    owns = jax.device_get(init(seeds))
    jobs = [
        Job(cfg, run_dir, host.fresh_tally(cfg.task.seeds), jax.tree.map(lambda x: x.shape, own))
        for cfg, run_dir, own in zip(cfgs, run_dirs, owns)
    ]
    stacked, stacked_jobs = family, list(jobs)  # what trains now: after a regroup, the jobs left
    state = _stack(owns, jobs, stacked, devices.mesh)

    def step_stacked(program, state, consts, active, start, k: int):
        new, outputs = program.chunk(state, consts, start, k)
        return _select(active, new, state), outputs

    shape = {"jobs": len(jobs), "hidden": H, "bits": family.bits, "regroups": []}  # what the family trained at
    compiled, train_seconds, step, every = {}, 0.0, 0, log_every(first.train)
    stacked_seconds, stacked_steps, chunk_compile = 0.0, 0, 0.0
    steps = first.train.steps
    try:
        while step < steps and any(j.active for j in jobs):
            end = min(steps, (step // every + 1) * every)
            k = end - step
            active = np.zeros(sum(j.cfg.task.seeds for j in stacked_jobs), bool)
            for j in stacked_jobs:
                active[j.rows] = j.active
            args = (state, stacked.consts, jnp.asarray(active), jnp.int32(step))
            if k not in compiled:
                t0 = time.perf_counter()
                jitted = jax.jit(partial(step_stacked, stacked.program), static_argnums=4)
                compiled[k] = jitted.lower(*args, k).compile(compiler_options=stacked.program.compile_options)
                chunk_compile = time.perf_counter() - t0
                compile_seconds += chunk_compile
            t0 = time.perf_counter()
            new_state, outputs = compiled[k](*args)
            losses, accuracy = to_host(outputs)
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            stacked_seconds += seconds
            stacked_steps += k
            with interrupts_deferred():  # the state, each job's step and its log line move together
                state, step = new_state, end
                for j in (j for j in stacked_jobs if j.active):
                    _advance(j, losses[j.rows], accuracy[j.rows], end, t_start)
            smaller = _smaller_shape(stacked_jobs, devices.count) if step < steps else None
            if smaller is None:
                continue
            old = _arithmetic(stacked_jobs, stacked.hidden, stacked.bits)
            new = _arithmetic([j for j in stacked_jobs if j.active], *smaller)
            if regroup_pays(old, new, stacked_seconds / stacked_steps, steps - step, chunk_compile):
                with interrupts_deferred():
                    stacked_jobs, stacked, state = _regroup(stacked_jobs, stacked, state, *smaller, devices, optimizer)
                    compiled, stacked_seconds, stacked_steps = {}, 0.0, 0
                    hidden, bits = smaller
                    shape["regroups"].append({"step": step, "jobs": len(stacked_jobs), "hidden": hidden, "bits": bits})
    except KeyboardInterrupt:  # each job keeps its last logged step, as the driver keeps it alone
        with interrupts_deferred():
            host_state = to_host(state)
            for j in jobs:
                own = j.final if j.final is not None else _own(host_state, j, stacked.hidden)
                _interrupted(j, own, device_record, shape, t_start)
        raise

    host_state = to_host(state)
    for j in stacked_jobs:
        j.final = _own(host_state, j, stacked.hidden)
    everyone = _stack([j.final for j in jobs], jobs, family, devices.mesh)  # every job at H again, in order
    evaluation = host.evaluate(family.setup, first.task, platform, everyone.train.params)
    summaries = []
    for j in jobs:
        e = evaluation.rows(j.rows)._replace(chain_seconds=evaluation.chain_seconds / len(jobs))
        fields = host.summary_fields(j.cfg.task, j.seeds, j.tally, e)
        share = {
            "compile_seconds": (compile_seconds + evaluation.compile_seconds) / len(jobs),
            "train_seconds": train_seconds / len(jobs),
        }
        summaries.append(_finish(j, fields, j.final, share, device_record, shape, t_start))
    return summaries


def _smaller_shape(jobs: list, device_count: int) -> Optional[tuple[int, int]]:
    """After some of `jobs` stopped: the `(hidden, bits)` the jobs left would be restacked at
    (their own largest); None when none stopped or all did, or when the replicas left would not
    split evenly over the devices."""
    left = [j for j in jobs if j.active]
    if not left or len(left) == len(jobs) or sum(j.cfg.task.seeds for j in left) % device_count:
        return None
    return max(j.cfg.model.hidden for j in left), max(j.cfg.task.bits for j in left)


def _regroup(jobs: list, stacked: Stacked, state, hidden: int, bits: int, devices, optimizer):
    """The jobs still training restacked at `hidden` units and `bits` bits, with their program;
    each stopped one keeps its own state (`Job.final`). Returns `(jobs left, Stacked, state)`."""
    host_state = to_host(state)
    left, owns = [], []
    for j in jobs:
        own = _own(host_state, j, stacked.hidden)
        if j.active:
            left.append(j)
            owns.append(own)
        else:
            j.final = own
    smaller = _stacked_program([j.cfg for j in left], hidden, bits, devices, optimizer)
    return left, smaller, _stack(owns, left, smaller, devices.mesh)


def _advance(j: Job, losses, accuracy, end: int, t_start: float) -> None:
    """Folds a chunk into job `j`'s tally, logs its line, and stops it by its own rule."""
    j.tally, fields = host.observe(j.tally, (losses, accuracy), end)
    j.step = end
    record = {"step": end, **fields, "elapsed": round(time.perf_counter() - t_start, 4)}
    status = host.status(j.cfg.task.stop_when_solved, j.tally)
    if status != DIVERGED:
        j.last_finite = record
    j.metrics.write(record)
    j.active = status not in (SOLVED, DIVERGED)


def _own(final, j: Job, H: int):
    """Job `j`'s replicas of the family state (on the host), at the job's own size."""
    return jax.tree.map(lambda leaf, shape: unpad(leaf[j.rows], shape, j.cfg.model.hidden, H), final, j.shapes)


def _interrupted(j: Job, own_state, device_record: dict, shape: dict, t_start: float) -> None:
    """An interrupted family: job `j`'s checkpoint at its last logged step (unless it diverged or
    logged none) and a summary that says so; a rerun resumes it alone."""
    header = run_header(j.cfg, device_record)
    diverged = host.status(j.cfg.task.stop_when_solved, j.tally) == DIVERGED
    if j.step and not diverged:
        _save(j, own_state, t_start)
    status = "failed" if diverged else "interrupted"
    write_summary(j.run_dir, {"status": status, "steps": j.step, "fused": shape, **header})


def _save(j: Job, own_state, t_start: float) -> None:
    """Job `j`'s `checkpoints/last` at its step, at its own size, as the driver saves it alone."""
    elapsed = time.perf_counter() - t_start
    meta = checkpoint_meta(j.cfg, j.step, j.tally, math.inf, elapsed, {}, [{"from_step": 0}])
    checkpoints = Checkpoints(j.run_dir)
    try:
        checkpoints.save("last", j.step, jax.device_put(own_state), meta)
    finally:
        checkpoints.close()


def _finish(j: Job, fields: dict, own_state, share: dict, device_record: dict, shape: dict, t_start) -> dict:
    """The job's checkpoint (unless it diverged) and summary, as the driver writes them alone."""
    header = run_header(j.cfg, device_record)
    diverged = host.status(j.cfg.task.stop_when_solved, j.tally) == DIVERGED
    history = [{"from_step": 0}]
    if not diverged:
        _save(j, own_state, t_start)
    fields.pop("compile_seconds", None)
    summary = {"status": "ok", "task": "addition", **fields}
    if diverged:
        summary.update(diverged_fields(j.step, j.last_finite))
    seconds = share["compile_seconds"], share["train_seconds"], time.perf_counter() - t_start
    summary.update(
        **run_figures(j.step, j.step, None, history, *seconds),
        fused={
            **shape,
            "family_compile_seconds": round(shape["jobs"] * share["compile_seconds"], 4),
            "family_train_seconds": round(shape["jobs"] * share["train_seconds"], 4),
            "note": "compile_seconds and train_seconds are this job's share of its family's",
        },
        **header,
    )
    write_summary(j.run_dir, summary)
    return summary


__all__ = ["family", "pad", "unpad", "train_family"]
