"""The one training driver: every task trains through `train_and_evaluate`.

It builds the task from the config (`rnn_jax.tasks.registry.TASKS`), then runs its compiled
`lax.scan` chunks up to each log, validation or the end, and between them writes
`metrics.jsonl`, the checkpoints and the progress bar. Compilation is timed apart from training.
SIGINT and SIGTERM are acted on at once, even in the middle of a long chunk: the run saves the
state of the last logged step and ends (the state, the step count, the checkpoint and the log
line always move together). A run directory that holds a checkpoint is resumed from it, so a
rerun takes the steps an uninterrupted run would have taken; one that has nothing left to train
changes nothing. A run whose loss turns NaN or Inf stops there, `failed`, and never saves the
diverged state over a good checkpoint.

    run_dir/metrics.jsonl           one line per chunk: step, the task's fields, elapsed
    run_dir/summary.json            status ok | failed | interrupted, the task's figures, timing,
                                    the device, and the whole config under "config"
    run_dir/checkpoints/last/       Orbax steps: every validation, the end, an interrupt
    run_dir/checkpoints/best/       the lowest value of the task's `best` field
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp

from rnn_jax.driver.backend import Devices, select_backend
from rnn_jax.driver.checkpoint import Checkpoints
from rnn_jax.driver.config import Config, validate
from rnn_jax.driver.distributed import initialize as initialize_distributed
from rnn_jax.driver.distributed import is_writer
from rnn_jax.driver.loggers import make_loggers
from rnn_jax.driver.memory import check_memory
from rnn_jax.driver.optim import make_optimizer
from rnn_jax.driver.provenance import code_version
from rnn_jax.driver.resume import Resumed, checkpoint_meta, continue_metrics, resume
from rnn_jax.driver.rundir import (
    MetricsLog,
    atomic_write_bytes,
    finite_or_null,
    interrupts_deferred,
    run_lock,
    write_summary,
)
from rnn_jax.tasks.base import DIVERGED, SOLVED, Task, log_every, place, to_host
from rnn_jax.tasks.registry import TASKS

POLL_SECONDS = 0.05  # how often the host looks whether a chunk has ended (and lets signals in)


class NothingToTrain(Exception):
    """The run directory is already at `train.steps` (or its task finished): nothing was run and
    nothing in the directory changed. `summary` is the one it holds."""

    def __init__(self, run_dir: Path, step: int, summary: dict):
        super().__init__(f"{run_dir} is already at step {step}: nothing to train, nothing changed")
        self.summary = summary


def run(
    cfg: Config, run_dir, group: Optional[str] = None, worker: Optional[int] = None, name: Optional[str] = None
) -> dict[str, Any]:
    """Starts `jax.distributed` when the config or the cluster asks for it, chooses the devices and
    the precision `cfg` names, then `train_and_evaluate`, feeding the trackers `cfg.logger` names.

    `group`: the sweep the run belongs to, if any; `worker`: the number of a sweep worker that
    runs one job per device (it gets one device, its number modulo how many there are); `name`: the
    job's name in the trackers (its overrides, `loggers.job_name`)."""
    validate(cfg)
    initialize_distributed(cfg.backend.distributed)
    # Process-wide, so set for every job: a float32 job after a float64 one in the same sweep
    # process must not inherit x64.
    jax.config.update("jax_enable_x64", cfg.train.dtype == "float64")
    spec = TASKS[cfg.task.name]
    devices, device_record = select_backend(
        cfg.backend.name, cfg.backend.compilation_cache, cfg.backend.devices, worker, spec.parallel(cfg)
    )
    print(f"devices: {device_record['device_use']} {devices.platform}", file=sys.stderr)
    check_memory(cfg, spec.memory(cfg), device=devices.mesh.devices.flat[0])
    loggers = make_loggers(cfg.logger, Path(run_dir), group, name) if is_writer() else []
    return train_and_evaluate(cfg, Path(run_dir), devices, device_record, loggers)


def run_header(cfg: Config, device_record: dict) -> dict:
    """What every summary of a run holds besides its figures: the task, the devices, the code and
    the whole config."""
    return {"task": cfg.task.name, **device_record, "code": code_version(), "config": dataclasses.asdict(cfg)}


def train_and_evaluate(
    cfg: Config, run_dir: Path, devices: Devices, device_record: dict, loggers: Sequence = ()
) -> dict[str, Any]:
    """Trains (or resumes) the task of `cfg` in `run_dir` on `devices`; returns the summary it
    writes there, which holds `device_record` (what `select_backend` says of the devices).

    An interrupt (Ctrl-C, SIGTERM) ends training at once; the run is then checkpointed at its
    last logged step and summarised with `status: "interrupted"` before the interrupt goes on.
    One that comes while the run is still compiling leaves a summary with `steps: 0`. Raises
    `NothingToTrain` when the directory's run is already complete."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir, ".lock" if is_writer() else f".lock.process{jax.process_index()}"):
        return _train_and_evaluate(cfg, run_dir, devices, device_record, loggers)


def _train_and_evaluate(
    cfg: Config, run_dir: Path, devices: Devices, device_record: dict, loggers: Sequence
) -> dict[str, Any]:
    t_start = time.perf_counter()
    name = cfg.task.name
    task = TASKS[name].make(cfg, make_optimizer(cfg.optim, cfg.train.steps), devices)
    state_spec, consts_spec = task.program.partition or (None, None)
    task = task._replace(program=task.program._replace(consts=place(task.program.consts, devices.mesh, consts_spec)))
    header = run_header(cfg, device_record)
    timing = Timing()
    try:
        with timing.compiling():
            state = place(task.program.init(), devices.mesh, state_spec)
        resumed = resume(cfg, run_dir, task, state)
    except KeyboardInterrupt:  # still compiling: nothing was trained, so nothing to save
        if is_writer() and not (run_dir / "summary.json").exists():
            write_summary(run_dir, {"status": "interrupted", "steps": 0, **header})
        raise
    if resumed.nothing_to_train and resumed.source == run_dir and (run_dir / "summary.json").exists():
        raise NothingToTrain(run_dir, resumed.step, json.loads((run_dir / "summary.json").read_text()))
    kept = continue_metrics(resumed.source, run_dir, resumed.step) if is_writer() else []
    for logger in loggers:
        logger.start(header["config"], header["code"])
    loop = Loop(cfg, task, run_dir, resumed, timing, loggers, last_record=kept[-1] if kept else None)
    try:
        return train_and_summarize(loop, resumed, header, loggers, t_start)
    except Exception as e:  # the trackers' runs end failed too, not left running
        for logger in loggers:  # each logger swallows its own errors at finish
            logger.finish({"status": "failed", "error": f"{type(e).__name__}: {e}", "steps": loop.step, **header})
        raise
    finally:
        loop.checkpoints.close()


def train_and_summarize(
    loop: "Loop", resumed: "Resumed", header: dict, loggers: Sequence, t_start: float
) -> dict[str, Any]:
    """Trains, then saves and summarises: `status` ok, failed (diverged) or interrupted."""
    task, run_dir, timing, name = loop.task, loop.run_dir, loop.timing, loop.cfg.task.name
    interrupted = loop.train()
    with interrupts_deferred():
        if loop.last_fields is None and task.validation is not None and not (interrupted or loop.diverged):
            loop.validate()  # nothing trained in this run: report the checkpoint it resumed
        fields = task.report.summarize(loop.state, loop.tally)
        timing.compile_seconds += fields.pop("compile_seconds", 0.0)
        if not (loop.saved_at_step or loop.diverged):
            loop.save_last()
        summary = {"status": "ok", "task": name, **fields}
        if loop.diverged:
            summary.update(diverged_fields(loop.step, loop.last_finite))
        if interrupted:
            summary["status"] = "interrupted"
        trained = loop.step - resumed.step
        elapsed = resumed.elapsed + time.perf_counter() - t_start
        summary.update(
            **{f"final_{k}": v for k, v in (loop.last_fields or {}).items()},
            **({f"best_{loop.best_field}": finite_or_null(loop.best)} if loop.best_field else {}),
            **run_figures(
                loop.step,
                trained,
                resumed.path,
                loop.config_history,
                timing.compile_seconds,
                timing.train_seconds,
                elapsed,
            ),
        )
        if task.display.throughput:
            unit, per_step = task.display.throughput
            summary[f"{unit}_per_second"] = trained * per_step / timing.train_seconds if trained else None
        summary = {**summary, **header}
        if is_writer():
            write_summary(run_dir, summary)
        for logger in loggers:
            logger.finish(summary)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def diverged_fields(step: int, last_finite: Optional[dict]) -> dict:
    """A summary's fields for a run whose loss turned NaN or Inf at `step`."""
    return {"status": "failed", "error": f"loss became NaN or Inf at step {step}", "last_finite": last_finite}


def run_figures(
    step: int, trained: int, resumed_from, config_history: list, compile_seconds: float, train_seconds: float, elapsed
) -> dict:
    """A summary's figures of the run itself: its steps (`trained` of them in this process), the
    checkpoint it resumed from, its settings by step range, and its seconds."""
    return {
        "steps": step,
        "steps_this_run": trained,
        "resumed_from": resumed_from,
        "config_history": config_history,
        "compile_seconds": round(compile_seconds, 4),
        "train_seconds": round(train_seconds, 4),
        "us_per_step": round(1e6 * train_seconds / trained, 3) if trained else None,
        "elapsed_seconds": round(elapsed, 4),
    }


class Timing:
    """Seconds spent compiling and in compiled training chunks, kept apart."""

    def __init__(self):
        self.compile_seconds = self.train_seconds = 0.0

    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        """Counts the block's seconds as compiling."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.compile_seconds += time.perf_counter() - t0


def _finite(fields: dict) -> bool:
    return all(math.isfinite(v) for v in fields.values() if isinstance(v, float))


class Loop:
    """The host loop's state between chunks, and what it does at each."""

    def __init__(
        self,
        cfg: Config,
        task: Task,
        run_dir: Path,
        start: Resumed,
        timing: Timing,
        loggers: Sequence = (),
        last_record: Optional[dict] = None,
    ):
        self.cfg, self.task, self.run_dir, self.timing, self.loggers = cfg, task, run_dir, timing, loggers
        self.state, self.step, self.tally, self.best = start.state, start.step, start.tally, start.best
        self.elapsed0, self.t0 = start.elapsed, time.perf_counter()
        self.last_fields: Optional[dict] = None  # the latest validation's fields
        self.last_finite = last_record  # the latest log record before any divergence
        self.diverged = False
        self.saved_at_step = start.nothing_to_train  # checkpoints/last holds this very step
        self.config_history = start.config_history
        self.checkpoints = Checkpoints(run_dir)
        self.metrics = MetricsLog(run_dir)
        self.chunk = jax.jit(task.program.chunk, static_argnums=3)
        self.best_field = task.validation.best if task.validation else None
        self.compiled: dict[int, Any] = {}  # chunk length -> executable (the last chunk may be shorter)

    def next_stop(self) -> int:
        """The next step at which the host must look: a log, a validation or the end."""
        t, s = self.cfg.train, self.step
        every = log_every(t)
        ends = [t.steps, (s // every + 1) * every]
        if self.task.validation:
            every = self.task.validation.every
            ends.append((s // every + 1) * every)
        return min(ends)

    def run_chunk(self, k: int):
        args = (self.state, self.task.program.consts, jnp.int32(self.step))
        if k not in self.compiled:
            with self.timing.compiling():
                options = self.task.program.compile_options
                self.compiled[k] = self.chunk.lower(*args, k).compile(compiler_options=options)
        t0 = time.perf_counter()
        state, outputs = self.compiled[k](*args)
        # Wait by polling, not by blocking in XLA: a signal must not wait for a long chunk's end.
        # The first polls come soon, so a short chunk is not rounded up to a whole POLL_SECONDS.
        wait = POLL_SECONDS / 64
        while not all(x.is_ready() for x in jax.tree.leaves(outputs)):
            time.sleep(wait)
            wait = min(1.25 * wait, POLL_SECONDS)  # a chunk waits at most a quarter longer than it runs
        return state, to_host(outputs), time.perf_counter() - t0

    def train(self) -> bool:
        """Chunks until the end, the task is finished or the loss diverged; True when interrupted."""
        from tqdm.auto import tqdm

        cfg, task = self.cfg, self.task
        bar = tqdm(
            total=cfg.train.steps,
            initial=self.step,
            unit="step",
            disable=not (cfg.train.progress and is_writer()),
            leave=False,
            file=sys.stderr,
        )
        try:
            while self.step < cfg.train.steps and not (task.report.status(self.tally) == SOLVED or self.diverged):
                end = self.next_stop()
                state, outputs, seconds = self.run_chunk(end - self.step)
                with interrupts_deferred():  # the state, the step count, the checkpoint and the log line move together
                    record = self.advance(state, outputs, end, seconds)
                bar.update(end - bar.n)
                bar.set_postfix({k: _short(record.get(k)) for k in task.display.progress})
                if task.display.log_line is not None and is_writer():
                    bar.write(task.display.log_line(record), file=sys.stdout)
        except KeyboardInterrupt:  # the chunk in flight is dropped; the state is the last logged one
            with interrupts_deferred():
                if not (self.saved_at_step or self.diverged):
                    self.save_last(interrupted=True)
            return True
        finally:
            bar.close()
        return False

    def advance(self, state, outputs, end: int, seconds: float) -> dict:
        cfg, task = self.cfg, self.task
        k = end - self.step
        self.state, self.step, self.saved_at_step = state, end, False
        self.timing.train_seconds += seconds
        self.tally, fields = task.report.observe(self.tally, outputs, end)
        record = {"step": end, **fields}
        self.diverged = task.report.status(self.tally) == DIVERGED
        v = task.validation
        if not self.diverged and v is not None and (end % v.every == 0 or end == cfg.train.steps):
            record.update(self.validate())
            self.diverged = not _finite(self.last_fields)
            if not self.diverged:
                self.save_last()
        if task.display.throughput:
            unit, per_step = task.display.throughput
            record[f"{unit}_per_sec"] = k * per_step / seconds
        record["elapsed"] = round(self.elapsed0 + time.perf_counter() - self.t0, 4)
        if not self.diverged:
            self.last_finite = record
        if is_writer():
            self.metrics.write(record)
        for logger in self.loggers:
            logger.log(record)
        return record

    def validate(self) -> dict:
        fields, files = self.task.validation.validate(self.state, self.step)
        for rel, text in files.items() if is_writer() else ():
            atomic_write_bytes(self.run_dir / rel, text.encode("utf-8"))
        for logger in self.loggers:
            logger.files([self.run_dir / rel for rel in files])
        self.last_fields = fields
        value = fields.get(self.best_field) if self.best_field else None
        if value is not None and value < self.best:  # NaN never compares lower
            self.best = value
            self.checkpoints.save("best", self.step, self.state, self.meta(**fields))
        return fields

    def meta(self, **extra) -> dict:
        elapsed = self.elapsed0 + time.perf_counter() - self.t0
        identity, history = self.task.identity, self.config_history
        return checkpoint_meta(self.cfg, self.step, self.tally, self.best, elapsed, identity, history, **extra)

    def save_last(self, **extra) -> None:
        self.checkpoints.save("last", self.step, self.state, self.meta(**(self.last_fields or {}), **extra))
        self.saved_at_step = True


def _short(x):
    return f"{x:.4f}" if isinstance(x, float) else "-" if x is None else x
