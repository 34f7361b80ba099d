"""Choosing the JAX backend from the config, with a clear error when it is not there."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Optional

import jax

BACKENDS = ("auto", "cpu", "gpu", "tpu")


class BackendError(RuntimeError):
    pass


def select_backend(name: str, compilation_cache: Optional[str] = None) -> dict:
    """Makes the first device of backend `name` ("auto", "cpu", "gpu", "tpu") JAX's default
    device; returns what is used.

    The choice is made through `jax_default_device`, not by restricting JAX's platforms, so
    that one process (a sweep's jobs under Hydra's basic launcher) can run a CPU job and then
    a GPU job. Asking for an accelerator that is not there raises `BackendError` instead of
    silently falling back to the CPU.
    """
    if name not in BACKENDS:
        raise BackendError(f"backend.name={name!r} is not allowed; allowed: {', '.join(BACKENDS)}")
    if compilation_cache and writable_directory(compilation_cache, "backend.compilation_cache"):
        jax.config.update("jax_compilation_cache_dir", str(compilation_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if name == "auto":
        device = jax.devices()[0]
    else:
        try:
            device = jax.devices(name)[0]
        except RuntimeError:
            found = ", ".join(sorted({d.platform for d in jax.devices()}))
            raise BackendError(f"backend.name={name}: JAX finds no {name.upper()} here (it finds: {found}); allowed: {', '.join(BACKENDS)}") from None
    jax.config.update("jax_default_device", device)
    return device_info(device)


def writable_directory(path: str, key: str) -> bool:
    """Whether `path` is (or can be made) a directory this process can write; if not, says so in
    one line naming `key`: a cache that cannot be written is a warning, not a failed run."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError as e:
        print(f"warning: {key}={path}: {e.strerror}; running without it", file=sys.stderr)
        return False


def device_info(device=None) -> dict:
    device = device or jax.devices()[0]
    return {
        "backend": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(device.platform),
        "jax_version": jax.__version__,
    }
