"""Memory known before it is spent: a task's estimate of its peak, checked against what is free.

Each task estimates from its config alone (`TaskSpec.memory`) the bytes its largest parts take
at the peak: parameters and optimizer state, a chunk's batches, what the backward pass keeps,
evaluation sets. `check_memory` adds the process's own footprint (Python, JAX, XLA's compiler)
and refuses, in one line naming the largest part and the key that sizes it, a run whose estimate
exceeds the memory this machine has free; the run would otherwise be killed part-way with no
message and no summary. On a GPU or TPU the arrays live in the device's memory, so there the
figure is the device's (`memory_stats()`), not the host's.
"""

from __future__ import annotations

import os
from typing import Optional

from rnn_jax.config_checks import ConfigError

PROCESS_BYTES = 400 * 2**20  # Python, JAX, XLA and Hydra before any array (the default job peaks at 0.43 GB)


def available_bytes() -> Optional[int]:
    """Memory free for this process: MemAvailable, capped by the cgroup's limit; None if unknown."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = open(path).read().strip()
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 2**60:
            used_path = os.path.join(
                os.path.dirname(path), "memory.current" if path.endswith("max") else "memory.usage_in_bytes"
            )
            try:
                used = int(open(used_path).read().strip())
            except (OSError, ValueError):
                used = 0
            free = min(free if free is not None else 2**62, int(limit) - used)
    return free


def device_available_bytes(device) -> Optional[int]:
    """Memory free on an accelerator: `bytes_limit` less `bytes_in_use` of `device.memory_stats()`;
    None for a CPU device or where the runtime reports no limit."""
    if device is None or device.platform == "cpu":
        return None
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some runtimes raise instead of returning None
        return None
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def gigabytes(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def estimate(parts: dict) -> int:
    """The estimated peak of a run: the process itself and every part (`{(what, key): bytes}`)."""
    return PROCESS_BYTES + int(sum(parts.values()))


def check_memory(cfg, parts: dict, available: Optional[int] = None, device=None) -> int:
    """Raises `ConfigError` when the estimate exceeds the free memory; returns the estimate.
    `parts` maps `(what, the config key that sizes it)` to bytes; `device` (a `jax.Device`, or None)
    is the run's first device: an accelerator's own free memory is checked instead of the host's."""
    total = estimate(parts)
    where = ""
    if available is None:
        available = device_available_bytes(device)
        if available is not None:
            where = f" on {device.platform}:{device.id} ({device.device_kind})"
        else:
            available = available_bytes()
    if available is not None and total > available:
        (what, key), largest = max(parts.items(), key=lambda kv: kv[1])
        value = _lookup(cfg, key)
        raise ConfigError(
            key,
            value,
            f"this run would need about {gigabytes(total)} ({what}: {gigabytes(largest)}) "
            f"and {gigabytes(available)} is free{where}; lower {key}",
        )
    return total


def _lookup(cfg, key: str):
    obj = cfg
    for name in key.split("."):
        obj = getattr(obj, name)
    return obj
