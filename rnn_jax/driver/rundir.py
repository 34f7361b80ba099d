"""The files of an experiment directory: metrics.jsonl (appended), summary.json (atomic)."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

from rnn_jax.driver.checkpoint import atomic_write_json, finite_or_null


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Holds SIGINT and SIGTERM until the block ends, then delivers the first that came to the
    handler that was in place before (Ctrl-C's: `KeyboardInterrupt`).

    Wraps bookkeeping that must happen whole: the step counter, the state it counts and the
    log line that reports them. An interrupt in the middle would leave a summary whose step
    count no metrics line shows. Off the main thread, where Python delivers no signals, it
    does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        signal.raise_signal(received[0])


class RunDirectoryError(ValueError):
    """A run directory that cannot take this run."""


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl`, flushed at once so an interrupted
    run keeps every line it logged."""

    def __init__(self, run_dir: Path, name: str = "metrics.jsonl"):
        self.path = Path(run_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(finite_or_null(record), allow_nan=False) + "\n")


def read_jsonl(path: Path) -> Iterator[dict]:
    """The records of a JSONL file; a final line cut short by a crash is skipped."""
    with Path(path).open() as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = Path(run_dir) / "summary.json"
    atomic_write_json(path, summary)
    return path
