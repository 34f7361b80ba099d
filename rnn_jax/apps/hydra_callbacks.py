"""Hydra callbacks of the app, named in `conf/config.yaml` under `hydra.callbacks`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rnn_jax.driver.rundir import atomic_write_bytes


class KeepEarlierRunConfig(Callback):
    """Keeps a run directory's `.hydra/` files as they were before this run.

    Hydra writes the job's config into `.hydra/` before the app starts, so a run that the app
    then refuses (the directory already holds a run, or its checkpoint does not fit) would leave
    the earlier run's record describing a run that never happened. `restore_earlier_run_config`
    puts the kept files back. Single runs only: a sweep's job directories are new.
    """

    kept: dict[Path, bytes] = {}  # class-level: `main` restores without a handle on the instance

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        KeepEarlierRunConfig.kept = {}
        if config.hydra.output_subdir is None:
            return
        saved = Path(config.hydra.run.dir) / config.hydra.output_subdir
        if saved.is_dir():
            KeepEarlierRunConfig.kept = {p: p.read_bytes() for p in saved.iterdir() if p.is_file()}


def restore_earlier_run_config() -> None:
    """Puts back the `.hydra/` files that `KeepEarlierRunConfig` kept (nothing if there were none)."""
    for path, data in KeepEarlierRunConfig.kept.items():
        atomic_write_bytes(path, data)


class SweepOutcome(Callback):
    """At the end of a sweep: how many jobs failed and which, and a non-zero exit when any did,
    so a script running the sweep can tell (every job has run by then)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed, total = [], 0
        for job in sorted((d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)):
            total += 1
            try:
                summary = json.loads((job / "summary.json").read_text())
            except (OSError, ValueError):
                failed.append(f"job {job.name}: no summary.json")
                continue
            if summary.get("status") != "ok":
                failed.append(f"job {job.name}: {summary.get('status')}: {summary.get('error', '')}".rstrip(": "))
        if failed:
            print(f"{len(failed)} of {total} jobs did not end ok (details in each job's summary.json and train.log):", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr)
            raise SystemExit(1)
