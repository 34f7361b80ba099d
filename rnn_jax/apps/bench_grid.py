"""What `python -m rnn_jax.bench` measures: the names it knows, its config (`BenchConfig`, one list
per axis of the grid) and its checks, a grid point (`Point`) and a compiled benchmark (`Runner`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, List, NamedTuple, Optional

LINEAR_CELL_NAMES = ("mingru", "minlstm", "lru", "rglru")  # rnn_jax only, sequential and parallel scans
CELL_NAMES = ("lstm", "gru", *LINEAR_CELL_NAMES)
MODES = ("train", "forward")
BENCH_DTYPES = ("float32", "bfloat16")
IMPLEMENTATIONS = (
    "rnn_jax",
    "rnn_jax_fused",
    "rnn_jax_autodiff",
    "rnn_jax_remat",
    "rnn_jax_sequential",
    "rnn_jax_parallel",
    "flax",
    "flax_optimized",
    "torch",
)
BASELINES = ("torch", "flax")  # the columns of ratios in bench.md


@dataclass
class BenchConfig:
    """The grid and how to time it; every list is one axis of the grid."""

    cells: List[str] = field(default_factory=lambda: ["lstm", "gru"])
    implementations: List[str] = field(default_factory=lambda: list(IMPLEMENTATIONS))
    modes: List[str] = field(default_factory=lambda: ["train", "forward"])
    batch: List[int] = field(default_factory=lambda: [32])
    seq_len: List[int] = field(default_factory=lambda: [128])
    hidden: List[int] = field(default_factory=lambda: [256])
    input: List[int] = field(default_factory=lambda: [64])  # embedding width, the cell's input size
    dtype: List[str] = field(default_factory=lambda: ["float32"])  # bfloat16: matmul operands only
    unroll: List[int] = field(default_factory=lambda: [0])  # 0: each implementation's default
    vocab: int = 128
    warmup: int = 3
    steps: int = 20  # timed calls per implementation and grid point (median, p10, p90 over these)
    rounds: int = 0  # the steps are split into this many interleaved rounds; 0: one call per round
    lr: float = 1e-3
    seed: int = 0
    xla_flags: str = ""  # appended to XLA_FLAGS; takes effect only before JAX starts its backend
    progress: bool = True


class BenchError(ValueError):
    """A config value out of range; the message names the key and what is allowed."""


def validate(cfg: BenchConfig) -> BenchConfig:
    for key, allowed in [
        ("cells", CELL_NAMES),
        ("implementations", IMPLEMENTATIONS),
        ("modes", MODES),
        ("dtype", BENCH_DTYPES),
    ]:
        values = getattr(cfg, key)
        if not values:
            raise BenchError(f"{key} is empty; allowed: {', '.join(allowed)}")
        for v in values:
            if v not in allowed:
                raise BenchError(f"{key}: {v!r} is not allowed; allowed: {', '.join(allowed)}")
    for key in ("batch", "seq_len", "hidden", "input"):
        values = getattr(cfg, key)
        if not values or any(v < 1 for v in values):
            raise BenchError(f"{key}={list(values)} is not allowed; must be a non-empty list of ints >= 1")
    if not cfg.unroll or any(u < 0 for u in cfg.unroll):
        raise BenchError(
            f"unroll={list(cfg.unroll)} is not allowed; must be ints >= 1, or 0 for each implementation's default"
        )
    for key, low in [("vocab", 2), ("warmup", 0), ("steps", 1), ("rounds", 0)]:
        if getattr(cfg, key) < low:
            raise BenchError(f"{key}={getattr(cfg, key)} is not allowed; must be >= {low}")
    if cfg.rounds > cfg.steps:
        raise BenchError(f"rounds={cfg.rounds} is not allowed; must be <= steps ({cfg.steps})")
    if not cfg.lr > 0:
        raise BenchError(f"lr={cfg.lr} is not allowed; must be > 0")
    return cfg


class Point(NamedTuple):
    """One grid point: what every implementation is timed on side by side."""

    cell: str
    mode: str
    batch: int
    seq_len: int
    hidden: int
    input: int
    dtype: str
    unroll: int  # 0: each implementation's default


class Runner(NamedTuple):
    """A compiled benchmark: `call()` runs one step and waits for it."""

    call: Callable[[], Any]
    compile_s: Optional[float]
    unroll: Optional[int]  # the unroll actually used (None: not a knob of this implementation)


def grid(cfg: BenchConfig) -> list[Point]:
    axes = (cfg.cells, cfg.modes, cfg.batch, cfg.seq_len, cfg.hidden, cfg.input, cfg.dtype, cfg.unroll)
    return [Point(*p) for p in itertools.product(*axes)]
