"""The files of an experiment directory: metrics.jsonl (appended), summary.json and other JSON
(strict, written atomically), the lock that keeps two processes out of one directory, and the
deferral of interrupts around bookkeeping that must happen whole."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same directory and a rename, so a
    crash or a full disk leaves the previous file (or none), never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise with_path(e, path)


def with_path(error: BaseException, path) -> BaseException:
    """`error`, naming `path` when it is an OSError that names no file (a write to a full disk)."""
    if isinstance(error, OSError) and not error.filename:
        return type(error)(error.errno, error.strerror, str(path))
    return error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    """Strict JSON: NaN and Inf are written as null."""
    text = json.dumps(finite_or_null(obj), indent=2, default=_json_default, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def _json_default(x):
    if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "__array__"):
        return finite_or_null(np.asarray(x).tolist())
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def finite_or_null(x):
    """`x` with NaN and Inf as None (null): bare NaN is not JSON, and strict readers (jq,
    browsers, `json.loads(..., parse_constant=reject)`) refuse it."""
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    return x


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
    """A run directory that cannot take this run (another live process is writing it)."""


@contextlib.contextmanager
def run_lock(
    run_dir: Path, name: str = ".lock", what: str = "run directory", key: str = "hydra.run.dir"
) -> Iterator[None]:
    """Holds `run_dir/name` for the block: a second process that wants the same directory is
    refused at once with `RunDirectoryError` naming the holder (and `key`, the setting that
    chooses another `what`). The lock is the operating system's (`flock`), so a process that
    dies, even by SIGKILL, releases it. (The processes of one multi-process run hold one name
    each; a sweep holds `.sweep.lock` in its sweep directory.)"""
    path = Path(run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunDirectoryError(f"{what} {run_dir} is in use by {holder}; choose another {key}") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl`, flushed at once so an interrupted
    run keeps every line it logged."""

    def __init__(self, run_dir: Path, name: str = "metrics.jsonl"):
        self.path = Path(run_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(finite_or_null(record), allow_nan=False) + "\n")
        except OSError as e:
            raise with_path(e, self.path) from None


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
