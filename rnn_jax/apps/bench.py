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
import json
import os
import sys
from pathlib import Path
from typing import Any

from rnn_jax.apps import CONF_DIR
from rnn_jax.apps.bench_grid import BenchConfig, BenchError, grid, validate
from rnn_jax.apps.bench_runners import make_runner
from rnn_jax.apps.bench_table import markdown
from rnn_jax.apps.bench_timing import environment, record, time_interleaved


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
