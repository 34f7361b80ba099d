"""Which code a run ran: the git commit of the rnn_jax checkout and whether its tree was dirty.

`summary.json` and every tracker carry it, so a result can be traced to its code. Each git call
is bounded in time (a git that hangs on a network filesystem or a lock must not stall start-up);
outside a git checkout (an installed wheel) the package version is what identifies the code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Optional

TIMEOUT_SECONDS = 2.0  # per git call; a run asks git twice

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding rnn_jax/: a checkout's top


def _git(root: Path, *args: str, timeout: float) -> Optional[str]:
    """`git -C root args`'s output, or None when git is missing, fails or outlasts `timeout`."""
    try:  # its own process group, so a child git started (a hook, a credential helper) ends with it
        proc = subprocess.Popen(
            ["git", "-C", str(root), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    except OSError:
        return None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return out.strip() if proc.returncode == 0 else None


def package_version() -> Optional[str]:
    try:
        return metadata.version("rnn_jax")
    except metadata.PackageNotFoundError:
        return None


def code_version(root: Path = PACKAGE_ROOT, timeout: float = TIMEOUT_SECONDS) -> dict:
    """`{"version", "commit", "dirty"}` of the code in `root`: commit and dirty are None when
    `root` is not the top of a git checkout (a wheel installed inside some other repository
    belongs to none) or git did not answer within `timeout` seconds per call; `dirty` counts
    tracked files only (untracked ones never ran unless imported, and listing them can be slow)."""
    out = {"version": package_version(), "commit": None, "dirty": None}
    top = _git(root, "rev-parse", "--show-toplevel", "HEAD", timeout=timeout)
    lines = top.splitlines() if top else []
    if len(lines) != 2 or Path(lines[0]).resolve() != Path(root).resolve():
        return out
    status = _git(root, "status", "--porcelain", "--untracked-files=no", timeout=timeout)
    return {**out, "commit": lines[1], "dirty": None if status is None else bool(status)}
