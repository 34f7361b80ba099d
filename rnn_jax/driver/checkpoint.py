"""Checkpoints: a pytree as msgpack (Flax serialization) plus a JSON description, written atomically.

A checkpoint is a directory holding `state.msgpack` and `meta.json` (which records the state's
SHA-256, so a corrupted file is caught on load, not trained on). It loads without the code
that trained it: `load(path)` returns nested dicts of NumPy arrays and the metadata; pass a
`target` pytree of the same structure to get NamedTuples back. Every file is written to a
temporary name and renamed into place, so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

FORMAT = "rnn_jax.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or not an rnn_jax checkpoint."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same directory and a rename."""
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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    """Strict JSON: NaN and Inf are written as null."""
    text = json.dumps(finite_or_null(obj), indent=2, default=_json_default, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


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


def _json_default(x):
    if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "__array__"):
        return np.asarray(x).tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def save(path, state: Any, meta: Optional[dict] = None) -> Path:
    """Saves pytree `state` and a JSON-able `meta` dict into directory `path`.

    The state is written before the metadata, and each atomically, so `meta.json` only ever
    describes a complete `state.msgpack`.
    """
    from flax import serialization

    path = Path(path)
    host_state = jax.tree.map(np.asarray, jax.device_get(state))
    data = serialization.msgpack_serialize(serialization.to_state_dict(host_state))
    atomic_write_bytes(path / "state.msgpack", data)
    atomic_write_json(path / "meta.json", {"format": FORMAT, "sha256": hashlib.sha256(data).hexdigest(), **(meta or {})})
    return path


def load(path, target: Any = None):
    """Loads a checkpoint directory; returns `(state, meta)`.

    Without `target`, `state` is nested dicts of NumPy arrays; with it, a pytree shaped like
    `target`. Raises `CheckpointError` naming the path and the problem.
    """
    from flax import serialization

    path = Path(path)
    meta = load_meta(path)
    try:
        data = (path / "state.msgpack").read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: state.msgpack is missing") from None
    if "sha256" in meta and hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"checkpoint {path}: state.msgpack is corrupt (its SHA-256 differs from the one meta.json recorded)")
    try:
        state = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on bad bytes
        raise CheckpointError(f"checkpoint {path}: state.msgpack is corrupt ({type(e).__name__}: {e})") from None
    if target is not None:
        state = to_target(path, target, state)
    return state, meta


def load_meta(path) -> dict:
    """A checkpoint's `meta.json` alone (cheap: the state is not read); `CheckpointError` if the
    directory is not an rnn_jax checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: no such directory")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: meta.json is missing (not an rnn_jax checkpoint, or an interrupted save)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}: meta.json is corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an rnn_jax checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    return meta


def to_target(path, target: Any, state_dict: Any):
    """`state_dict` (nested dicts, as `load` returns without a target) as a pytree shaped like
    `target`; `CheckpointError`, naming `path`, when structure or shapes differ."""
    from flax import serialization

    try:
        state = serialization.from_state_dict(target, state_dict)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: does not match the expected structure ({e})") from None
    _check_shapes(path, target, state)
    return state


def _check_shapes(path, target, state):
    for (where, t), s in zip(jax.tree_util.tree_leaves_with_path(target), jax.tree.leaves(state)):
        if np.shape(t) != np.shape(s) or _dtype(t) != _dtype(s):
            raise CheckpointError(
                f"checkpoint {path}: {jax.tree_util.keystr(where)} is {_dtype(s)}{list(np.shape(s))}, expected {_dtype(t)}{list(np.shape(t))}"
            )


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
