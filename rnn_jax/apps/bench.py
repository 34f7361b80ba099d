"""Benchmark: `python -m rnn_jax.bench [preset=tiny] [overrides]`.

Times one training step (embedding -> LSTM/GRU layer -> linear -> cross-entropy -> Adam) and the
forward pass of the recurrent layer, for rnn_jax's cells and, in the same process, Flax's
`nn.RNN` cells and PyTorch's `nn.LSTM`/`nn.GRU` (when torch is importable). Each grid point
compiles every implementation first (compilation timed apart, `lower(...).compile()`), warms it
up, then times `steps` calls, each ended by `block_until_ready`, in `rounds` interleaved rounds so
that a noisy machine slows every implementation alike. Writes `bench.json` (one record per
measurement) and `bench.md` (the table, with speed ratios against the baselines measured beside
it) into the run directory, and prints the table.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Optional

import numpy as np

from rnn_jax.apps import CONF_DIR

LINEAR_CELL_NAMES = ("mingru", "minlstm", "lru", "rglru")  # rnn_jax only, sequential and parallel scans
CELL_NAMES = ("lstm", "gru", *LINEAR_CELL_NAMES)
MODES = ("train", "forward")
DTYPES = ("float32", "bfloat16")
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
        ("dtype", DTYPES),
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


# ---------------------------------------------------------------------------------- JAX runners


def _tokens(key, p: Point, vocab: int):
    import jax

    tokens = jax.random.randint(key, (p.seq_len + 1, p.batch), 0, vocab)  # [T+1, B]
    return tokens[:-1], tokens[1:]  # inputs, next-token targets


def _compiled(fn, *args, donate=()):
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _jax_runner(p: Point, cfg: BenchConfig, init, logits, layer, unroll) -> Runner:
    """A runner from `init(key) -> params`, `logits(params, tokens[T, B]) -> [T, B, V]` and
    `layer(params, xs[T, B, I]) -> ys`, the recurrent layer alone (forward mode)."""
    import jax
    import optax

    key_p, key_t, key_x = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    params = init(key_p)
    if p.mode == "forward":
        xs = jax.random.normal(key_x, (p.seq_len, p.batch, p.input))  # [T, B, I]
        compiled, seconds = _compiled(layer, params, xs)
        return Runner(lambda: jax.block_until_ready(compiled(params, xs)), seconds, unroll)

    opt = optax.adam(cfg.lr)
    inputs, targets = _tokens(key_t, p, cfg.vocab)

    def loss(params, inputs, targets):
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, inputs), targets).mean()

    def train_step(state, inputs, targets):
        params, opt_state = state
        value, grads = jax.value_and_grad(loss)(params, inputs, targets)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    state = [(params, opt.init(params))]
    compiled, seconds = _compiled(train_step, state[0], inputs, targets, donate=(0,))

    def call():
        state[0], value = compiled(state[0], inputs, targets)
        return jax.block_until_ready(value)

    return Runner(call, seconds, unroll)


def rnn_jax_runner(p: Point, cfg: BenchConfig, implementation: str) -> Runner:
    """rnn_jax's rows: in train mode the very step the training driver runs for a char-LM
    (`rnn_jax.tasks.charlm.model.char_lm`, its `make_loss`, `rnn_jax.training.make_step`), with a
    one-layer model and Adam; in forward mode the recurrent layer alone."""
    import jax
    import jax.numpy as jnp
    import optax

    import rnn_jax as rj
    from rnn_jax import fused
    from rnn_jax.tasks.charlm.model import Batch, char_lm, make_loss
    from rnn_jax.training import init_state, make_step

    linear = p.cell in LINEAR_CELL_NAMES
    variants = {"rnn_jax": dict(), "rnn_jax_sequential": dict()}  # LSTM, GRU: their one (sequential) default path
    if linear:  # the linear-recurrence cells: the scan, f32 only
        variants.update(rnn_jax_sequential=dict(scan="sequential"), rnn_jax_parallel=dict(scan="parallel"))
    else:
        variants.update(
            rnn_jax_fused=dict(backward="fused"),
            rnn_jax_autodiff=dict(backward="autodiff"),
            rnn_jax_remat=dict(remat=True),
        )
    options = variants.get(implementation)
    if options is None or (linear and p.dtype != "float32"):
        return None
    if p.dtype == "bfloat16":
        options = dict(options, matmul_dtype=jnp.bfloat16)
    cell = rj.CELLS[p.cell](p.hidden, **options)
    unroll = p.unroll or None
    resolved = fused.resolve(options.get("backward", "auto"), unroll, options.get("remat", False))[1]
    key_p, key_t, key_x = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    if p.mode == "forward":
        params = cell.init(key_p, p.input)
        xs = jax.random.normal(key_x, (p.seq_len, p.batch, p.input))  # [T, B, I]
        compiled, seconds = _compiled(lambda params, xs: rj.unroll(cell, params, xs, unroll=unroll)[1], params, xs)
        return Runner(lambda: jax.block_until_ready(compiled(params, xs)), seconds, resolved)

    model = char_lm([cell], cfg.vocab, p.input)
    optimizer = optax.adam(cfg.lr)
    step = make_step(make_loss(model, unroll), optimizer)
    inputs, targets = (t.T for t in _tokens(key_t, p, cfg.vocab))  # [B, T], as the char-LM's batches
    batch = Batch(inputs, targets, model.initial_carry((p.batch,)), None)
    state = [init_state(model.init(key_p), optimizer)]
    compiled, seconds = _compiled(step, state[0], batch, donate=(0,))

    def call():
        state[0], (value, _) = compiled(state[0], batch)
        return jax.block_until_ready(value)

    return Runner(call, seconds, resolved)


def flax_runner(p: Point, cfg: BenchConfig, implementation: str) -> Optional[Runner]:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    if (implementation == "flax_optimized" and p.cell != "lstm") or p.cell in LINEAR_CELL_NAMES:
        return None
    cell_type = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}[p.cell]
    if implementation == "flax_optimized":
        cell_type = nn.OptimizedLSTMCell
    dtype = jnp.bfloat16 if p.dtype == "bfloat16" else jnp.float32
    unroll = p.unroll or 1
    # Flax's cells compute in `dtype` throughout (their nearest bf16 equivalent); params stay f32.
    rnn = nn.RNN(cell_type(p.hidden, dtype=dtype, param_dtype=jnp.float32), time_major=True, unroll=unroll)
    embed, readout = nn.Embed(cfg.vocab, p.input), nn.Dense(cfg.vocab)

    def init(key):
        k_e, k_c, k_r = jax.random.split(key, 3)
        xs = jnp.zeros((p.seq_len, p.batch, p.input))
        return {
            "embed": embed.init(k_e, jnp.zeros((1,), jnp.int32)),
            "cell": rnn.init(k_c, xs),
            "readout": readout.init(k_r, jnp.zeros((1, p.hidden))),
        }

    def layer(params, xs):
        return rnn.apply(params["cell"], xs).astype(jnp.float32)

    def logits(params, tokens):
        return readout.apply(params["readout"], layer(params, embed.apply(params["embed"], tokens)))

    return _jax_runner(p, cfg, init, logits, layer, unroll)


# ------------------------------------------------------------------------------ PyTorch runner


def torch_runner(p: Point, cfg: BenchConfig) -> Optional[Runner]:
    prepare_torch_threads()
    import torch

    if p.dtype != "float32" or p.cell in LINEAR_CELL_NAMES:
        return None
    torch.manual_seed(cfg.seed)
    embed = torch.nn.Embedding(cfg.vocab, p.input)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[p.cell](p.input, p.hidden)  # time-major
    readout = torch.nn.Linear(p.hidden, cfg.vocab)
    params = [*embed.parameters(), *rnn.parameters(), *readout.parameters()]
    tokens = torch.randint(0, cfg.vocab, (p.seq_len + 1, p.batch))
    inputs, targets = tokens[:-1], tokens[1:].reshape(-1)
    xs = torch.randn(p.seq_len, p.batch, p.input)
    opt = torch.optim.Adam(params, lr=cfg.lr)

    def train_step():
        opt.zero_grad(set_to_none=True)
        ys, _ = rnn(embed(inputs))
        loss = torch.nn.functional.cross_entropy(readout(ys).reshape(-1, cfg.vocab), targets)
        loss.backward()
        opt.step()
        return loss.item()  # waits for the step

    def forward():
        with torch.no_grad():
            return rnn(xs)[0].sum().item()

    return Runner(train_step if p.mode == "train" else forward, None, None)


def prepare_torch_threads() -> None:
    """Makes PyTorch's OpenMP threads sleep, not spin, between parallel regions, so that they do not
    take the cores from XLA's thread pool (or the reverse) when both live in this process; must run
    before torch is first imported (OpenMP reads it when it loads). Measured on a 2-core CPU: a
    spinning PyTorch training step took 4.8-5.3 s in the benchmark process against 0.15-0.2 s with
    this, which is what it takes in a process of its own (docs/benchmarks.md)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def torch_version() -> Optional[str]:
    prepare_torch_threads()
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def torch_threads() -> Optional[int]:
    return None if torch_version() is None else sys.modules["torch"].get_num_threads()


# ------------------------------------------------------------------------------------- timing


def make_runner(p: Point, cfg: BenchConfig, implementation: str) -> Optional[Runner]:
    """The runner, or None where the implementation has no such variant (noted in bench.json)."""
    if implementation.startswith("rnn_jax"):
        return rnn_jax_runner(p, cfg, implementation)
    if implementation.startswith("flax"):
        return flax_runner(p, cfg, implementation)
    return torch_runner(p, cfg)


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


def run(cfg: BenchConfig, run_dir: Path) -> dict[str, Any]:
    """Runs the grid; writes `bench.json` and `bench.md` into `run_dir`; returns what it wrote."""
    validate(cfg)
    if cfg.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {cfg.xla_flags}".strip()
    from tqdm import tqdm

    env = environment()
    implementations = list(cfg.implementations)
    skipped = []
    if "torch" in implementations and env["versions"]["torch"] is None:
        implementations.remove("torch")
        skipped.append({"implementation": "torch", "reason": "torch is not importable (pip install 'rnn_jax[torch]')"})
    points = grid(cfg)
    records = []
    bar = tqdm(total=len(points) * len(implementations), disable=not cfg.progress, file=sys.stderr, desc="bench")
    for p in points:
        runners = {}
        for name in implementations:
            bar.set_postfix_str(f"{p.cell} {p.mode} B{p.batch} T{p.seq_len} H{p.hidden} {p.dtype} {name}")
            if name == "torch" and p.unroll not in (0, cfg.unroll[0]):
                runner = None  # torch has no unroll knob: timed once per shape
            else:
                runner = make_runner(p, cfg, name)
            if runner is None:
                skipped.append({"implementation": name, **p._asdict(), "reason": "no such variant"})
            else:
                runners[name] = runner
            bar.update()
        times = time_interleaved(runners, cfg)
        records += [record(p, name, runners[name], times[name], env) for name in runners]
    bar.close()
    result = {"environment": env, "config": dataclasses.asdict(cfg), "records": records, "skipped": skipped}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "bench.json").write_text(json.dumps(result, indent=1))
    (run_dir / "bench.md").write_text(markdown(result))
    return result


# ------------------------------------------------------------------------------------- report


def _key(r: dict) -> tuple:
    return (r["cell"], r["mode"], r["batch"], r["seq_len"], r["hidden"], r["input"], r["dtype"])


def ratios(records: list[dict]) -> list[dict[str, Optional[float]]]:
    """For each record, `baseline median / this median` against each of `BASELINES` measured at the
    same point (the same requested unroll for Flax; torch has none). Above 1: faster than it."""
    base = {}
    for r in records:
        if r["implementation"] in BASELINES:
            unroll = None if r["implementation"] == "torch" else r["unroll_requested"]
            base[(r["implementation"], _key(r), unroll)] = r["median_ms"]
    out = []
    for r in records:
        row = {}
        for b in BASELINES:
            ms = base.get((b, _key(r), None if b == "torch" else r["unroll_requested"]))
            row[b] = None if ms is None else ms / r["median_ms"]
        out.append(row)
    return out


def markdown(result: dict) -> str:
    env = result["environment"]
    v = env["versions"]
    lines = [
        f"Device: {env['device_kind']} ({env['backend']}, {env['cpu_count']} CPUs); "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        + (f"; XLA_FLAGS={env['xla_flags']}" if env["xla_flags"] else "")
        + (
            f"; torch threads {env['torch_threads']}, OMP_WAIT_POLICY={env['omp_wait_policy']}"
            if env["torch_threads"]
            else ""
        ),
        "",
        "| cell | mode | B | T | H | I | dtype | implementation | unroll | median ms | p10–p90 ms | tokens/s | compile s | × torch | × flax |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    for r, q in zip(result["records"], ratios(result["records"])):
        lines.append(
            f"| {r['cell']} | {r['mode']} | {r['batch']} | {r['seq_len']} | {r['hidden']} | {r['input']} | {r['dtype']} "
            f"| {r['implementation']} | {fmt(r['unroll'], 'd')} | {r['median_ms']:.1f} | {r['p10_ms']:.1f}–{r['p90_ms']:.1f} "
            f"| {r['tokens_per_s']:,.0f} | {fmt(r['compile_s'], '.2f')} | {fmt(q['torch'], '.2f')} | {fmt(q['flax'], '.2f')} |"
        )
    for s in result["skipped"]:
        where = f" at {s['cell']} {s['mode']} {s['dtype']}" if "cell" in s else ""
        lines.append(f"\nSkipped {s['implementation']}{where}: {s['reason']}.")
    lines.append(
        "\n× torch, × flax: the baseline's median over this row's, at the same shape and dtype (above 1: faster)."
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- entry point


def register_configs() -> None:
    """Registers the schema with Hydra's ConfigStore, so a typo or a wrong type fails at start."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    register_configs()

    @hydra.main(version_base=None, config_path=str(CONF_DIR / "bench"), config_name="bench")
    def _main(dcfg: DictConfig) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            result = run(OmegaConf.to_object(dcfg), run_dir)
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2)
        print((run_dir / "bench.md").read_text())
        print(f"{len(result['records'])} measurements in {run_dir}")

    _main()


if __name__ == "__main__":
    main()
