"""Where a run starts: its own checkpoint, another run's (`train.resume`), or nothing.

A resume is refused when the checkpoint was made for another task or data (its identity), does
not fit the run's arrays, or was trained with other settings than the run now asks for, unless
`train.resume_changes=allow` records the change (`config_history`). `RESUME_FREE` are the
settings a resume may change without changing what is trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

from rnn_jax.driver.checkpoint import CheckpointError, Checkpoints
from rnn_jax.driver.config import Config
from rnn_jax.driver.optim import SCHEDULES_OVER_TRAINING
from rnn_jax.driver.rundir import atomic_write_bytes, finite_or_null, read_jsonl
from rnn_jax.tasks.base import DIVERGED, SOLVED, Task, restore_tally


@dataclasses.dataclass
class Resumed:
    """Where a run starts: the state, its step and tally, the best value so far."""

    state: Any
    step: int
    tally: Any  # the task's Report.tally type
    best: float = math.inf
    elapsed: float = 0.0
    path: Optional[str] = None  # the checkpoint resumed from
    source: Optional[Path] = None
    nothing_to_train: bool = False
    config_history: list = dataclasses.field(default_factory=lambda: [{"from_step": 0}])  # settings by step range


def resume(cfg: Config, run_dir: Path, task: Task, state) -> Resumed:
    """The state to start from: `train.resume`'s newest checkpoint, else this directory's own,
    else `state` (a fresh start). `CheckpointError` when the checkpoint was made for another
    task or data, or does not fit the run."""
    source = Path(cfg.train.resume).expanduser() if cfg.train.resume else run_dir
    checkpoints = Checkpoints(source)
    if cfg.train.resume and not checkpoints.exists("last"):
        raise CheckpointError(f"train.resume={cfg.train.resume}: no checkpoint at {source / 'checkpoints' / 'last'}")
    if not checkpoints.exists("last"):
        return Resumed(state, 0, task.report.tally, source=source)

    def check(meta: dict, problem: Optional[str]) -> None:
        path = source / "checkpoints"
        if meta.get("task") != cfg.task.name:
            raise CheckpointError(
                f"checkpoint {path} is of task {meta.get('task')!r}; this run is task={cfg.task.name}"
            )
        for key, value in (task.identity or {}).items():
            if meta.get("identity", {}).get(key) != value:
                raise CheckpointError(
                    f"checkpoint {path} was made for another {key}; did task.corpus or the data change?"
                )
        if problem is not None:
            differ = ", ".join(
                f"{k}={a} (now {b})" for k, (a, b) in config_changes(meta.get("config", {}), cfg).items()
            )
            raise CheckpointError(
                f"checkpoint {path} does not fit this run: " + (f"it was trained with {differ}" if differ else problem)
            )

    state, meta = checkpoints.restore("last", state, check)
    step = int(meta["step"])
    history = list(meta.get("config_history") or [{"from_step": 0}])
    changes = config_changes(meta.get("config", {}), cfg)
    if changes and cfg.train.resume_changes != "allow":
        differ = ", ".join(f"{k}={a} (now {b})" for k, (a, b) in changes.items())
        raise CheckpointError(
            f"resuming {source} at step {step} would change settings the run was trained with: {differ}; "
            "rerun with the earlier values, choose a new hydra.run.dir, or add train.resume_changes=allow to continue "
            "and record the change in summary.json (config_history)"
        )
    if changes:
        history.append({"from_step": step, "changed": {k: list(v) for k, v in changes.items()}})
    if source != run_dir and checkpoints.exists("best"):
        best_state, best_meta = checkpoints.restore("best", state, check)
        Checkpoints(run_dir).save("best", int(best_meta["step"]), best_state, best_meta)
    tally = restore_tally(task.report.tally, meta["tally"])
    done = step >= cfg.train.steps or task.report.status(tally) in (SOLVED, DIVERGED)
    last = source / "checkpoints" / "last" / str(step)
    elapsed = float(meta.get("elapsed", 0.0))
    return Resumed(state, step, tally, meta.get("best") or math.inf, elapsed, str(last), source, done, history)


# Settings a resume may change without changing what is trained: display, logging, where and on
# what it runs (devices change results by rounding only), and how it resumes.
RESUME_FREE = ("train.progress", "train.log_every", "train.resume", "train.resume_changes", "logger.", "backend.")


def flat_settings(tree: Any, prefix: str = "") -> dict:
    """A nested config dict as `{"section.key": value}` (an empty section is one value, `{}`)."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    return (
        {k: v for key, sub in tree.items() for k, v in flat_settings(sub, f"{prefix}{key}.").items()}
        if tree
        else {prefix.rstrip("."): tree}
    )


def config_changes(saved: dict, cfg: Config) -> dict[str, tuple]:
    """`{key: (saved, now)}` for every setting that differs from the checkpoint's and that changes
    the run's trajectory: all but `RESUME_FREE`, and `train.steps` where the learning-rate schedule
    does not stretch over it (a cosine schedule over `train.steps` does)."""
    old, new = flat_settings(saved), flat_settings(dataclasses.asdict(cfg))
    changes = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        free = key.startswith(RESUME_FREE) or (
            key == "train.steps" and cfg.optim.schedule not in SCHEDULES_OVER_TRAINING
        )
        if a != b and not free:
            changes[key] = (a, b)
    return changes


def continue_metrics(source: Path, run_dir: Path, step: int) -> list[dict]:
    """Keeps the metric lines up to `step` (from `source`) in `run_dir`, so a resumed run appends
    to its history instead of restarting or repeating it (a fresh start keeps none: lines a run
    that died before its first checkpoint left are void); returns the lines kept."""
    old = source / "metrics.jsonl"
    if not old.exists() and not (run_dir / "metrics.jsonl").exists():
        return []
    records = [r for r in read_jsonl(old) if r.get("step", math.inf) <= step] if old.exists() else []
    atomic_write_bytes(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    return records


def checkpoint_meta(
    cfg: Config, step: int, tally, best, elapsed: float, identity: dict, config_history: list, **fields
) -> dict:
    """What a checkpoint records beside its arrays, and what `resume` reads back: the task, the
    step, the tally (`tally._asdict()`), the best value, the seconds so far, the data identity, the
    whole config and its history, and any further `fields` (the latest validation's)."""
    return {
        "task": cfg.task.name,
        "step": step,
        "tally": tally._asdict(),
        "best": finite_or_null(best),
        "elapsed": elapsed,
        "identity": identity or {},
        "config": dataclasses.asdict(cfg),
        "config_history": config_history,
        **fields,
    }
