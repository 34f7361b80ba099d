"""Entry point: `python -m rnn_jax.train [overrides]` (also the `rnn-jax-train` script).

Hydra composes `conf/` into the typed schema of `rnn_jax.config`; everything after that sees
only frozen-in-spirit dataclasses. `run(cfg, run_dir)` does the work and is testable without
Hydra's decorator; `main` adds the run directory, one-line errors and sweep-safe failures.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import signal
import sys
import traceback
from pathlib import Path

from rnn_jax.apps import CONF_DIR
from typing import Any

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnn_jax.driver.backend import BackendError, select_backend
from rnn_jax.driver.checkpoint import CheckpointError, atomic_write_json
from rnn_jax.driver.config import Config, ConfigError, register_configs, validate
from rnn_jax.tasks.charlm.corpus import CorpusError
from rnn_jax.apps.hydra_callbacks import restore_earlier_run_config
from rnn_jax.driver.rundir import RunDirectoryError, write_summary

log = logging.getLogger("rnn_jax")

# task name -> module with `run(cfg: Config, run_dir: Path, device: dict) -> dict` (the summary)
RUNNERS = {"addition": "rnn_jax.tasks.addition.task", "charlm": "rnn_jax.tasks.charlm.task"}

# task name -> the summary figure `main` returns to a sweeper
OBJECTIVES = {"addition": "success_rate", "charlm": "best_val_bpc"}


# Errors a user can cause with a config value, a file or a directory: one line, no traceback.
USER_ERRORS = (ConfigError, BackendError, CheckpointError, CorpusError, RunDirectoryError, FileNotFoundError)

register_configs()


def to_config(dcfg: DictConfig) -> Config:
    """The composed DictConfig as the typed dataclasses, validated."""
    _reject_unknown_keys(dcfg)
    cfg = OmegaConf.to_object(dcfg)
    return validate(cfg)


def _reject_unknown_keys(node: DictConfig, path: str = "") -> None:
    """`+model.hiden=4` adds a key that the schema lacks (Hydra's `+` opens the struct); refuse it
    rather than run with the key silently ignored."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        if key not in fields:
            raise ConfigError(f"{path}{key}", node[key], f"{path.rstrip('.') or 'the config'} has no key {key!r}; its keys: {', '.join(fields)}")
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _reject_unknown_keys(child, f"{path}{key}.")


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Trains and evaluates `cfg`, writing everything into `run_dir`; returns the summary."""
    validate(cfg)
    # Process-wide, so set for every job: a float32 job after a float64 one in the same sweep
    # process must not inherit x64.
    jax.config.update("jax_enable_x64", cfg.train.dtype == "float64")
    device = select_backend(cfg.backend.name, cfg.backend.compilation_cache)
    runner = importlib.import_module(RUNNERS[cfg.task.name])
    return runner.run(cfg, Path(run_dir), device)


_SIGNALS_RECEIVED: list[int] = []


def _raise_keyboard_interrupt(signum, frame):
    """SIGTERM (a scheduler's stop) ends the run the way Ctrl-C does; `main` exits 128 + signum."""
    _SIGNALS_RECEIVED.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def failure_summary(dcfg: DictConfig, error: BaseException) -> dict[str, Any]:
    task = dcfg.get("task", {})
    model = dcfg.get("model", {})
    return {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "task": task.get("name"),
        "cell": model.get("cell"),
        "bits": task.get("bits"),
        "hidden": model.get("hidden"),
        "seeds": dcfg.get("train", {}).get("seeds"),
    }


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> float:
    """Runs one job; returns its objective for sweepers such as Optuna: the success rate over
    seeds for addition (maximise), the best validation bits per character for charlm (minimise)."""
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "TPU not found" noise
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        summary = run(to_config(dcfg), run_dir)
    except KeyboardInterrupt:
        print(f"interrupted; what was written is in {run_dir}", file=sys.stderr)
        raise SystemExit(128 + (_SIGNALS_RECEIVED[-1] if _SIGNALS_RECEIVED else signal.SIGINT))  # 130 or 143
    except Exception as e:  # noqa: BLE001 - every failure is recorded in the job's own directory
        if isinstance(e, USER_ERRORS) and not sweeping:
            restore_earlier_run_config()  # refused: the directory's earlier run keeps its record
        record = record_failure(run_dir, failure_summary(dcfg, e))
        if not isinstance(e, USER_ERRORS):
            (run_dir / "error.txt").write_text(traceback.format_exc())
        if sweeping:
            log.error("job failed: %s: %s (see %s)", type(e).__name__, e, record)
            return float("nan")
        if isinstance(e, USER_ERRORS):
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2)
        raise
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict)) or k == "generalization"}, indent=1))
    print(f"results in {run_dir}")
    if summary.get("status") == "failed" and not sweeping:
        print(f"error: the run failed: {summary.get('error')}", file=sys.stderr)
        raise SystemExit(1)
    objective = summary.get(OBJECTIVES[summary["task"]])
    return float("nan") if objective is None else float(objective)


def record_failure(run_dir: Path, failure: dict[str, Any]) -> Path:
    """Writes a failure into `summary.json`, or into `failure.json` when the directory already
    holds a run's summary: a rejected restart must not overwrite the record of the run before."""
    if (run_dir / "summary.json").exists():
        path = run_dir / "failure.json"
        atomic_write_json(path, failure)
        return path
    return write_summary(run_dir, failure)


if __name__ == "__main__":
    main()
