"""How the benchmark times: warm-up, then interleaved rounds of every runner, and one record per
measurement with the device, the library versions and the percentiles beside the figure."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np

from rnn_jax.apps.bench_grid import BenchConfig, Point, Runner
from rnn_jax.apps.bench_torch import torch_threads, torch_version


def time_interleaved(runners: dict[str, Runner], cfg: BenchConfig) -> dict[str, list[float]]:
    """Seconds per call: warm-up, then `rounds` rounds in which every runner takes its turn."""
    for r in runners.values():
        for _ in range(cfg.warmup):
            r.call()
    times = {name: [] for name in runners}
    rounds = cfg.rounds or cfg.steps  # one call each per round: a machine that changes speed slows all alike
    per_round = -(-cfg.steps // rounds)
    for _ in range(rounds):
        for name, r in runners.items():
            for _ in range(min(per_round, cfg.steps - len(times[name]))):
                start = time.perf_counter()
                r.call()
                times[name].append(time.perf_counter() - start)
    return times


def environment() -> dict[str, Any]:
    import flax
    import jax
    import jaxlib
    import optax

    device = jax.devices()[0]
    return {
        "backend": device.platform,
        "device_kind": device.device_kind,
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "torch": torch_version(),
        },
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch_threads": torch_threads(),
        "cpu_count": os.cpu_count(),
    }


def record(p: Point, implementation: str, runner: Runner, seconds: list[float], env: dict) -> dict[str, Any]:
    ms = 1e3 * np.asarray(seconds)
    median = float(np.median(ms))
    return {
        "implementation": implementation,
        **p._asdict(),
        "unroll": runner.unroll,
        "unroll_requested": p.unroll,
        "median_ms": median,
        "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)),
        "steps": len(ms),
        "tokens_per_s": p.batch * p.seq_len / (median / 1e3),
        "compile_s": runner.compile_s,
        "device_kind": env["device_kind"],
        "backend": env["backend"],
        "versions": env["versions"],
    }
