"""Entry point: `python -m rnn_jax.train [overrides]` (also the `rnn-jax-train` script).

Hydra composes `conf/` against the typed schemas (`rnn_jax.apps.schema`); `to_config` turns the
result into frozen dataclasses and `rnn_jax.driver.loop.run` does the work. Failures end in one
line (`rnn_jax.apps.errors`) and are recorded in the job's own directory.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rnn_jax.apps import CONF_DIR
from rnn_jax.apps.errors import composition_error, filesystem_cause, job_failed, one_line
from rnn_jax.apps.hydra_callbacks import record_job_outcome, restore_earlier_run_config
from rnn_jax.apps.schema import to_config
from rnn_jax.driver.failures import interrupt_exit_code, stop_on_sigterm
from rnn_jax.driver.loggers import job_name
from rnn_jax.driver.loop import NothingToTrain, run
from rnn_jax.tasks.registry import TASKS

__all__ = ["conclude", "exit_interrupted", "job", "main", "to_config"]


def main() -> None:
    """`python -m rnn_jax.train`: Hydra's app, whose own start-up failures (a run directory that
    cannot be made or written, a typo in an override) end in one message, not a traceback."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises; the message is printed here
    try:
        job()
    except Exception as e:  # noqa: BLE001 - anything the job itself did not handle
        cause = filesystem_cause(e)
        print(f"error: {one_line(cause) if cause is not None else composition_error(e)}", file=sys.stderr)
        raise SystemExit(2 if cause is not None else 1) from None


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def job(dcfg: DictConfig) -> float:
    """Runs one job; returns its objective for sweepers such as Optuna (the task's
    `TaskSpec.objective`: addition's success rate, charlm's best validation bpc)."""
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "TPU not found" noise
    hydra_cfg = HydraConfig.get()
    run_dir, sweeping = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    stop_on_sigterm()
    # Local worker processes (hydra/launcher=parallel) run one job per device: job k gets device k.
    joblib = "joblib" in str(hydra_cfg.launcher.get("_target_", "")).lower()
    try:
        group = str(Path(hydra_cfg.sweep.dir).resolve()) if sweeping else None
        name = job_name(hydra_cfg.overrides.task, run_dir)  # what the job changed: its name in the trackers
        summary = run(to_config(dcfg), run_dir, group, hydra_cfg.job.num if sweeping and joblib else None, name)
    except NothingToTrain as done:
        restore_earlier_run_config()  # the rerun changed nothing, its .hydra/ record included
        print(f"{done}", file=sys.stderr)
        summary = done.summary
    except KeyboardInterrupt:
        exit_interrupted(run_dir)
    except Exception as e:  # noqa: BLE001 - every failure is recorded in the job's own directory
        return job_failed(e, dcfg, run_dir, sweeping)
    return conclude(summary, dcfg)


def exit_interrupted(written) -> None:
    """Ends the process after an interrupt, saying where what was written is (exit 130 after
    Ctrl-C, 143 after SIGTERM); at once: a chunk still running would otherwise hold the exit."""
    print(f"interrupted; what was written is in {written}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(interrupt_exit_code())


def conclude(outcome, dcfg: DictConfig) -> float:
    """In a job's Hydra context, after training: prints the summary, records the job's outcome
    and returns its objective (`outcome` is the summary, or the exception that ended the run)."""
    hydra_cfg = HydraConfig.get()
    run_dir, sweeping = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    if isinstance(outcome, Exception):
        return job_failed(outcome, dcfg, run_dir, sweeping)
    summary = outcome
    print(
        json.dumps(
            {k: v for k, v in summary.items() if not isinstance(v, (list, dict)) or k == "generalization"}, indent=1
        )
    )
    print(f"results in {run_dir}")
    record_job_outcome(summary.get("status"), summary.get("error"))
    if summary.get("status") == "failed":
        if sweeping:
            logging.getLogger("rnn_jax").error("job failed: %s", summary.get("error"))
            return float("nan")
        print(f"error: the run failed: {summary.get('error')}", file=sys.stderr)
        raise SystemExit(1)
    objective = summary.get(TASKS[summary["task"]].objective)
    return float("nan") if objective is None else float(objective)


if __name__ == "__main__":
    main()
