"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) fed by the driver.

Each logger receives the composed config and the code (`provenance.code_version`) when the run
starts, every log record (`metrics.jsonl`'s lines, indexed by `step`), the files the run writes for
a person to look at (the char-LM's samples), and the final summary. `metrics.jsonl` and
`summary.json` are always written; trackers are extra, each configured by its section of `logger`
(conf/logger/). docs/tracking.md says what each tool shows and how to open it.

    tensorboard  one TensorBoard run per job, in <sweep or run dir>/tensorboard/<job name>/
    mlflow       a SQLite store in <run dir>/mlflow/ (a sweep: one store in <sweep dir>/mlflow/,
                 one experiment named by the sweep's relative name, one MLflow run per job)
    wandb        offline by default, files in <run dir>/wandb/ (`wandb sync` uploads them later);
                 the sweep's relative name is the W&B group

Names are relative, never a path of this machine: a job is named by its overrides
(`model.hidden=4,task.bits=6`, `job_name`), a sweep by its directory relative to the working
directory. What each tool receives:

- hyperparameters: the config flattened with dots (`model.hidden`), the code as `code.commit`,
  `code.dirty`, `code.version`; lists and None as JSON text where the tool takes only numbers,
  strings and booleans. W&B receives the nested config.
- curves: every number of every record at the record's `step`, under its group (`metric_name`):
  `train/loss`, `train/bpc`, `val/bpc`, `perf/chars_per_sec`, `perf/elapsed_seconds`,
  `per_seed/loss/0`; None is left out, NaN and infinities are passed on as the tool stores them
  (MLflow's SQL store turns infinities into the largest float).
- the summary, split (`summary_parts`): its results (`results/success_rate`,
  `results/best_val_bpc`, `results/generalization/16`) where each tool keeps final figures (the
  HParams table's only metrics, MLflow run metrics, the W&B summary); its throughput
  (`results/us_per_step`) as MLflow metrics and W&B summary fields; its bookkeeping (status, seeds,
  devices, steps this run, ...) as text: MLflow tags `summary.*`, TensorBoard text, W&B config
  `summary`. The run's status is the tool's own (MLflow FINISHED / KILLED / FAILED, the HParams
  session status, W&B's exit code).
- files: text samples as TensorBoard text at the step in their name (`samples/step_000200.txt`),
  MLflow artifacts and W&B run files, under their path in the run directory.

A logger whose tool fails after the run started (a tracking server gone) warns once and stops;
training goes on and `metrics.jsonl` keeps the record. A missing package, or an MLflow server that
does not answer, is a `ConfigError` at start, before anything compiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rnn_jax.driver.loggers.mlflow import MLflowConfig, MLflowLogger
from rnn_jax.driver.loggers.naming import RunNames, job_name, relative_name
from rnn_jax.driver.loggers.protocol import Guarded
from rnn_jax.driver.loggers.tensorboard import TensorBoardConfig, TensorBoardLogger
from rnn_jax.driver.loggers.wandb import WandbConfig, WandbLogger

__all__ = ["LOGGERS", "LoggerConfig", "job_name", "make_loggers"]  # job_name: the train app names its job with it


@dataclass(frozen=True)
class LoggerConfig:
    """Which trackers a run feeds (`logger=...` in conf/logger/); none by default."""

    tensorboard: Optional[TensorBoardConfig] = None
    mlflow: Optional[MLflowConfig] = None
    wandb: Optional[WandbConfig] = None


# name (a LoggerConfig field) -> factory(section config, run_dir, group, names) -> Logger
LOGGERS: dict = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger}


def make_loggers(cfg: LoggerConfig, run_dir: Path, group: Optional[str] = None, name: Optional[str] = None) -> list:
    """The loggers `cfg` turns on, for the run in `run_dir` (`group`: the directory of the sweep it
    belongs to; `name`: the job's name, `job_name` of its overrides, by default its directory's name).
    Each imports its package now, and an MLflow server is asked now, so a missing package or an
    unreachable server stops the run before it compiles."""
    run_dir = Path(run_dir)
    names = RunNames(name or run_dir.name, relative_name(Path(group)) if group else None)
    chosen = [(n, section) for n, section in vars(cfg).items() if section is not None]
    return [Guarded(n, LOGGERS[n](section, run_dir, group, names)) for n, section in chosen]
