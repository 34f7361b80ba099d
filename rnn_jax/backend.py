"""Choosing the JAX backend from the config, before any computation, with a clear error."""

from __future__ import annotations

import os
from typing import Optional

import jax

PLATFORMS = {"cpu": "cpu", "gpu": "cuda,rocm", "tpu": "tpu"}


class BackendError(RuntimeError):
    pass


def select_backend(name: str, compilation_cache: Optional[str] = None) -> dict:
    """Makes `name` ("auto", "cpu", "gpu", "tpu") JAX's backend; returns what is used.

    Must run before JAX initialises its backends. Asking for an accelerator that is not there
    raises `BackendError` instead of silently falling back to the CPU.
    """
    if name != "auto":
        if name not in PLATFORMS:
            raise BackendError(f"backend.name={name!r} is not allowed; allowed: auto, {', '.join(PLATFORMS)}")
        jax.config.update("jax_platforms", PLATFORMS[name])
    if compilation_cache:
        os.makedirs(compilation_cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(compilation_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:
        device = jax.devices()[0]
    except RuntimeError as e:
        raise BackendError(f"backend.name={name}: no {name.upper()} is available here ({str(e).splitlines()[0]})") from None
    return device_info(device)


def device_info(device=None) -> dict:
    device = device or jax.devices()[0]
    return {
        "backend": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
    }
