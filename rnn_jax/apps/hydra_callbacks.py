"""Hydra callbacks of the app, named in `conf/config.yaml` under `hydra.callbacks`."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnn_jax.driver.rundir import RunDirectoryError, atomic_write_bytes, atomic_write_json, run_lock


class KeepEarlierRunConfig(Callback):
    """Keeps a run directory's `.hydra/` files as they were before this run.

    Hydra writes the job's config into `.hydra/` before the app starts, so a run that the app
    then refuses (the directory already holds a run, or its checkpoint does not fit) would leave
    the earlier run's record describing a run that never happened. `restore_earlier_run_config`
    puts the kept files back. Single runs only: a sweep's job directories are new.
    """

    kept: dict[Path, bytes] = {}  # class-level: `main` restores without a handle on the instance

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        KeepEarlierRunConfig.kept = {}
        if config.hydra.output_subdir is None:
            return
        saved = Path(config.hydra.run.dir) / config.hydra.output_subdir
        if saved.is_dir():
            KeepEarlierRunConfig.kept = {p: p.read_bytes() for p in saved.iterdir() if p.is_file()}


def restore_earlier_run_config() -> None:
    """Puts back the `.hydra/` files that `KeepEarlierRunConfig` kept (nothing if there were none)."""
    for path, data in KeepEarlierRunConfig.kept.items():
        atomic_write_bytes(path, data)


SWEEP_LOCK = ".sweep.lock"  # held by the sweeping process while the sweep runs
SWEEP_RECORD = "sweep.json"  # what the sweep is: its task overrides and its sweeper's settings
OUTCOMES = "job_outcomes"  # <sweep dir>/job_outcomes/<job num>.json, written by each job of this sweep

_held: Optional[contextlib.ExitStack] = None  # module-level: a callback is pickled to joblib's workers


class SweepRecord(Callback):
    """A sweep directory holds one sweep, and a sweep's exit status says how its own jobs ended.

    At the start the sweeping process (not its jobs, which joblib and submitit run elsewhere)
    takes `<sweep dir>/.sweep.lock`, so a second sweep into a directory that a live one holds is
    refused; records the sweep in `sweep.json`, so a rerun of the same sweep continues it and a
    different one is refused naming what differs; and clears `job_outcomes/`. Each job writes
    its outcome there itself (`record_job_outcome`: "running" at its start, then "ok" or "failed"
    and why). At the end: the jobs that did not end ok, and exit 1 when there are any.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _held
        release_sweep()  # one left by a sweep of this process that stopped half-way (in-process runs)
        sweep_dir = Path(config.hydra.sweep.dir)
        lock = contextlib.ExitStack()
        try:
            lock.enter_context(run_lock(sweep_dir, SWEEP_LOCK, "sweep directory", "hydra.sweep.dir"))
            refusal = other_sweep(sweep_dir, sweep_identity(config))
            if refusal is None:
                atomic_write_json(sweep_dir / SWEEP_RECORD, sweep_identity(config))
                for old in (sweep_dir / OUTCOMES).glob("*.json"):  # an earlier run's of this sweep
                    old.unlink()
        except (RunDirectoryError, OSError) as e:
            refusal = str(e) if isinstance(e, RunDirectoryError) else f"{e.filename}: {e.strerror}"
        if refusal is not None:
            lock.close()
            print(f"error: {refusal}", file=sys.stderr)  # Hydra turns a callback's exceptions into warnings
            raise SystemExit(2)
        _held = lock

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        record_job_outcome("running")  # left so if the job dies without a word

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if job_return is None or job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value  # the exception the job did not catch (`.return_value` raises and logs it)
        record_job_outcome("failed", f"{type(error).__name__}: {error}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        outcomes = read_outcomes(sweep_dir / OUTCOMES)
        release_sweep()
        failed = {num: o for num, o in outcomes.items() if o["status"] != "ok"}
        if failed:
            for num, o in failed.items():
                print(f"  job {num}: {o['status']}" + (f": {o['error']}" if o.get("error") else ""), file=sys.stderr)
            details = "details in each job's summary.json and train.log"
            print(f"error: {len(failed)} of {len(outcomes)} jobs did not end ok ({details})", file=sys.stderr)
            raise SystemExit(1)


def release_sweep() -> None:
    """Lets go of the sweep directory this process holds (none: nothing)."""
    global _held
    if _held is not None:
        _held.close()
        _held = None


def sweep_identity(config: DictConfig) -> dict[str, Any]:
    """What makes a sweep the one it is: its task overrides, in order (the order numbers the
    jobs), and its sweeper's settings (the grid of a preset, Optuna's trials), as written."""
    return json.loads(json.dumps({
        "task_overrides": list(config.hydra.overrides.task),
        "sweeper": OmegaConf.to_container(config.hydra.sweeper, resolve=False),
    }))  # fmt: skip


def other_sweep(sweep_dir: Path, here: dict[str, Any]) -> Optional[str]:
    """Why `sweep_dir` cannot take the sweep `here`, or None: it is new, or holds this same sweep."""
    record = sweep_dir / SWEEP_RECORD
    if not record.exists():
        jobs = (sweep_dir / "multirun.yaml").exists() or any((d / ".hydra").is_dir() for d in sweep_dir.iterdir())
        if jobs:
            unrecorded = f"holds the jobs of a sweep without {SWEEP_RECORD}"
            return f"hydra.sweep.dir={sweep_dir} {unrecorded}; choose another hydra.sweep.dir"
        return None
    there = json.loads(record.read_text())
    if there == here:
        return None
    differ = "; ".join(differences(there, here))
    choose = "rerun that sweep or choose another hydra.sweep.dir"
    return f"hydra.sweep.dir={sweep_dir} holds another sweep ({differ}); {choose}"


def differences(there: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """The settings in which two sweep records differ, as "key: A there, B here"."""
    a, b = _settings(there), _settings(here)
    keys = dict.fromkeys([*a, *b])
    out = [f"{k}: {_shown(a.get(k))} there, {_shown(b.get(k))} here" for k in keys if a.get(k) != b.get(k)]
    return out or ["the same overrides in another order, which numbers the jobs otherwise"]


def _settings(record: dict[str, Any]) -> dict[str, Any]:
    """A sweep record as flat `key: value` pairs: `model.hidden: "2,4"`, `hydra.sweeper.params.optim.lr: ...`."""
    flat = {}
    for override in record.get("task_overrides", []):
        key, _, value = override.partition("=")
        flat[key] = value
    stack = [("hydra.sweeper", record.get("sweeper") or {})]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append((f"{prefix}.{key}", value))
            else:
                flat[f"{prefix}.{key}"] = value
    return flat


def _shown(value: Any) -> str:
    return "absent" if value is None else str(value)


def record_job_outcome(status: str, error: Optional[str] = None) -> None:
    """In a sweep's job: writes how it ended into `<sweep dir>/job_outcomes/<job num>.json`, the
    sweep's own record of its jobs (a job directory's summary.json may be an earlier run's)."""
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return
    outcome = {"job": hydra.job.num, "status": status, "error": error, "dir": hydra.runtime.output_dir}
    atomic_write_json(Path(hydra.sweep.dir) / OUTCOMES / f"{hydra.job.num}.json", outcome)


def read_outcomes(folder: Path) -> dict[int, dict[str, Any]]:
    """The jobs' outcomes by job number; a job still "running" at the end died without a word."""
    outcomes = {}
    for path in sorted(folder.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
        try:
            outcome = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            outcome = {"status": "unknown", "error": f"{path.name} unreadable: {e}"}
        if outcome.get("status") == "running":
            outcome = {"status": "did not finish", "error": "the job ended without saying how (killed, or a crash)"}
        outcomes[int(path.stem) if path.stem.isdigit() else path.stem] = outcome
    return outcomes
