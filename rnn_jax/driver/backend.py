"""Choosing the JAX backend from the config, with a clear error when it is not there."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import NamedTuple, Optional

import jax
import numpy as np
from jax.sharding import Mesh

BACKENDS = ("auto", "cpu", "gpu", "tpu")


class BackendError(RuntimeError):
    pass


class Devices(NamedTuple):
    """The devices a run computes on: a one-axis mesh (axis "data") over them."""

    platform: str  # "cpu", "gpu", "tpu": whose measured defaults the fast paths take
    mesh: Mesh  # every device of the run, in all processes; its axis "data" splits seeds or batches

    @property
    def count(self) -> int:
        return self.mesh.devices.size


def select_backend(
    name: str,
    compilation_cache: Optional[str] = None,
    devices: str = "all",
    worker: Optional[int] = None,
    parallel: tuple = (None, 1),
) -> tuple[Devices, dict]:
    """The devices of backend `name` ("auto", "cpu", "gpu", "tpu") a run uses, and a description.

    `devices` is "all" (every device of the platform, in every process), a count of them, or
    "auto": the most devices that divide `parallel`, the `(key, size)` of the axis the task splits
    over devices (addition's seeds, the char-LM's batch rows), so any run starts on any machine;
    the description's `device_use` then says how many of how many were used and why.
    `worker` (a sweep worker's number, with one job per device) picks one local device, the
    worker's number modulo how many there are. The first device is also made JAX's default
    device, through `jax_default_device` rather than by restricting JAX's platforms, so that one
    process (a sweep's jobs under Hydra's basic launcher) can run a CPU job and then a GPU job.
    Asking for an accelerator or more devices than there are raises `BackendError` instead of
    silently running on something else."""
    if name not in BACKENDS:
        raise BackendError(f"backend.name={name!r} is not allowed; allowed: {', '.join(BACKENDS)}")
    if compilation_cache and writable_directory(compilation_cache, "backend.compilation_cache"):
        jax.config.update("jax_compilation_cache_dir", str(compilation_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:
        found = jax.devices() if name == "auto" else jax.devices(name)
    except RuntimeError:
        platforms = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise BackendError(
            f"backend.name={name}: JAX finds no {name.upper()} here (it "
            f"finds: {platforms}); allowed: {', '.join(BACKENDS)}"
        ) from None
    if worker is not None:
        local = [d for d in found if d.process_index == jax.process_index()]
        chosen = [local[worker % len(local)]]
    elif devices == "all":
        chosen = found
    elif devices == "auto":
        # Several processes each feed their own devices, so a run across processes takes them all.
        count = (
            len(found) if jax.process_count() > 1 else max(c for c in range(1, len(found) + 1) if parallel[1] % c == 0)
        )
        chosen = found[:count]
    else:
        count = int(devices)
        if count > len(found):
            raise BackendError(
                f"backend.devices={count}: only {len(found)} {found[0].platform} "
                f"device(s) here; allowed: all, or 1 to {len(found)}"
            )
        chosen = found[:count]
    default = next((d for d in chosen if d.process_index == jax.process_index()), chosen[0])
    jax.config.update("jax_default_device", default)
    run = Devices(default.platform, Mesh(np.array(chosen), ("data",)))
    use = f"{run.count} of {len(found)}" + (
        f" ({parallel[0]}={parallel[1]})" if devices == "auto" and run.count < len(found) else ""
    )
    return run, {**device_info(default), "devices": run.count, "device_use": use, "processes": jax.process_count()}


def one_device(device=None) -> Devices:
    """`Devices` of one device (JAX's first by default): for using a task outside the driver."""
    device = device or jax.devices()[0]
    return Devices(device.platform, Mesh(np.array([device]), ("data",)))


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
