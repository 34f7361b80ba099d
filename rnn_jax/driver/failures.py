"""A run's failures on the record, and signals that end it as Ctrl-C does.

A failure goes into the run directory's `summary.json`, or into `failure.json` when the directory
already holds a run's summary: a refused restart must never overwrite the record of the run
before it. SIGTERM (a scheduler's stop) raises KeyboardInterrupt, so it is handled where Ctrl-C
is, and the process then exits 128 + the signal's number.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from rnn_jax.driver.rundir import atomic_write_json, write_summary

_SIGNALS_RECEIVED: list[int] = []


def _raise_keyboard_interrupt(signum, frame):
    _SIGNALS_RECEIVED.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """SIGTERM from now on ends the run the way Ctrl-C does (main thread only)."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def interrupt_exit_code() -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + (_SIGNALS_RECEIVED[-1] if _SIGNALS_RECEIVED else signal.SIGINT)


def failure_record(config: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The summary of a run that failed with `error`; `config` as it was composed."""
    task = config.get("task") or {}
    return {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "task": task.get("name") if isinstance(task, dict) else None,
        "config": config,
    }


def record_failure(run_dir: Path, failure: dict[str, Any], in_use: bool = False) -> Path:
    """Writes a failure into `summary.json`, or into `failure.json` when the directory already
    holds a run's summary (a rejected restart must not overwrite the record of the run before)
    or is `in_use` by another live run (whose summary is still to come). A summary that only
    records an earlier start that failed before training (no `steps`) gives way to the new one."""
    if in_use or (run_dir / "summary.json").exists() and not _failed_start(run_dir / "summary.json"):
        path = run_dir / "failure.json"
        atomic_write_json(path, failure)
        return path
    return write_summary(run_dir, failure)


def _failed_start(path: Path) -> bool:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") == "failed" and "steps" not in summary
