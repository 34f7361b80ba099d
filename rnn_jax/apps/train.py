"""Entry point: `python -m rnn_jax.train [overrides]` (also the `rnn-jax-train` script).

Hydra composes `conf/` against the typed schema of `rnn_jax.driver.config`; `to_config` turns
the result into frozen dataclasses, and `rnn_jax.driver.loop.run` does the work. `main` adds the
run directory, one-line errors and sweep-safe failures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnn_jax.apps import CONF_DIR
from rnn_jax.apps.hydra_callbacks import record_job_outcome, restore_earlier_run_config
from rnn_jax.build import MODEL_CONFIGS
from rnn_jax.driver.backend import BackendError
from rnn_jax.driver.checkpoint import CheckpointError
from rnn_jax.driver.config import Config, ConfigError, validate
from rnn_jax.driver.loggers import job_name
from rnn_jax.driver.loop import NothingToTrain, run
from rnn_jax.driver.optim import OPTIM_CONFIGS
from rnn_jax.driver.rundir import RunDirectoryError, atomic_write_json, write_summary
from rnn_jax.tasks.charlm.corpus import CorpusError
from rnn_jax.tasks.registry import TASKS

log = logging.getLogger("rnn_jax")

# Errors a user can cause with a config value, a file or a directory: one line, no traceback.
USER_ERRORS = (ConfigError, BackendError, CheckpointError, CorpusError, RunDirectoryError, OSError)


def schema_node(schema) -> DictConfig:
    """`schema` as a node for Hydra's ConfigStore. The dataclasses are frozen (nothing downstream
    may write into the config); OmegaConf would mark their nodes read-only, which forbids Hydra's
    own merging of `conf/` and the overrides, so only the node's flag is lifted."""
    node = OmegaConf.structured(schema)

    def writable(n: DictConfig):
        n._set_flag("readonly", None)
        for key in n.keys():
            child = n._get_node(key)
            if isinstance(child, DictConfig):
                writable(child)

    writable(node)
    return node


def register_configs() -> None:
    """The schema in Hydra's ConfigStore: `config_schema`, and `<name>_schema` in the task, model
    and optim groups, so each section holds only the keys of the task, cell and optimizer chosen."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=schema_node(Config(model=None, optim=None)))
    groups = {
        "task": {name: spec.config for name, spec in TASKS.items()},
        "model": MODEL_CONFIGS,
        "optim": OPTIM_CONFIGS,
    }
    for group, schemas in groups.items():
        for name, schema in schemas.items():
            cs.store(group=group, name=f"{name}_schema", node=schema_node(schema))


def _conf_choices(group: str) -> str:
    """The options of a config group, from its folder in conf/ (the help text lists them)."""
    return ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


register_configs()
if not OmegaConf.has_resolver("rnn_jax_choices"):
    OmegaConf.register_new_resolver("rnn_jax_choices", _conf_choices)
    OmegaConf.register_new_resolver("rnn_jax_pid", lambda: os.getpid())  # run directories unique per process


def to_config(dcfg: DictConfig) -> Config:
    """The composed DictConfig as the typed, frozen dataclasses, validated."""
    _reject_unknown_keys(dcfg)
    return validate(OmegaConf.to_object(dcfg))


def _reject_unknown_keys(node: DictConfig, path: str = "") -> None:
    """`+model.hiden=4` adds a key that the schema lacks (Hydra's `+` opens the struct); refuse it
    rather than run with the key silently ignored."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        if key not in fields:
            raise ConfigError(
                f"{path}{key}",
                node[key],
                f"{path.rstrip('.') or 'the config'} has no key {key!r}; its keys: {', '.join(fields)}",
            )
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _reject_unknown_keys(child, f"{path}{key}.")


_SIGNALS_RECEIVED: list[int] = []


def _raise_keyboard_interrupt(signum, frame):
    """SIGTERM (a scheduler's stop) ends the run the way Ctrl-C does; `main` exits 128 + signum."""
    _SIGNALS_RECEIVED.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def failure_summary(dcfg: DictConfig, error: BaseException) -> dict[str, Any]:
    try:
        config = OmegaConf.to_container(dcfg, resolve=True)
    except Exception:  # noqa: BLE001 - an unresolvable config is recorded as it was written
        config = OmegaConf.to_container(dcfg, resolve=False)
    return {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "task": dcfg.get("task", {}).get("name"),
        "config": config,
    }


def one_line(error: BaseException) -> str:
    """An error as the one line the app prints: a filesystem error names its path and cause."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return str(error)


def filesystem_cause(error: BaseException):
    """The OSError behind `error` (Hydra wraps some, e.g. "Unable to configure handler 'file'"), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def main() -> None:
    """`python -m rnn_jax.train`: Hydra's app, whose own start-up failures (a run directory that
    cannot be made or written, a typo in an override) end in one message, not a traceback."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises; the message is printed here
    try:
        job()
    except Exception as e:  # noqa: BLE001 - anything the job itself did not handle
        cause = filesystem_cause(e)
        if cause is not None:
            print(f"error: {one_line(cause)}", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"error: {composition_error(e)}", file=sys.stderr)
        raise SystemExit(1) from None


# Settings that live elsewhere now: a one-line pointer for a command line written for the old place.
MOVED = {
    "train.seeds": "it is task.seeds, for the tasks that train several seeds",
    "train.batch_size": "it is task.batch_size, for the tasks that have batches",
    "train.stop_when_solved": "it is task.stop_when_solved (addition)",
}


def composition_error(error: BaseException) -> str:
    """Hydra's start-up error as one line: an unparsable override with how to quote it, a key
    the chosen section does not have with the keys it has, else Hydra's messages joined."""
    chain = []
    while error is not None and len(chain) < 5:
        chain.append(error)
        error = error.__cause__
    for e in chain:
        if isinstance(e, OverrideParseException):
            override = str(e).split(":", 1)[-1].strip().splitlines()[0].strip()
            key, _, value = override.partition("=")
            return f"cannot parse the override {override!r}; quote a value with special characters, e.g. '{key}=\"{value}\"'"
        key, schema = getattr(e, "full_key", None), getattr(e, "object_type", None)
        if key and "not in" in str(e) and dataclasses.is_dataclass(schema):
            section = key.rpartition(".")[0]
            keys = ", ".join(f.name for f in dataclasses.fields(schema))
            moved = f" ({MOVED[key]})" if key in MOVED else ""
            return f"{key} is not a setting of this run's {section or 'config'} ({schema.__name__}){moved}; its keys: {keys}"
        if key and "not in struct" in str(e) and schema is dict:
            section = key.rpartition(".")[0]
            return f"{key}: this run has no {section} settings (its preset sets {section}=null); remove {key}"
    messages = list(dict.fromkeys(str(e) for e in chain if str(e)))
    return " / ".join(m.replace("\n", " ") for m in messages)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def job(dcfg: DictConfig) -> float:
    """Runs one job; returns its objective for sweepers such as Optuna (the task's
    `TaskSpec.objective`: addition's success rate, charlm's best validation bpc)."""
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "TPU not found" noise
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        # Local worker processes (hydra/launcher=parallel) run one job per device: job k gets the
        # device k modulo how many there are, so 8 workers on an 8-GPU node use 8 GPUs.
        worker = (
            hydra_cfg.job.num if sweeping and "joblib" in str(hydra_cfg.launcher.get("_target_", "")).lower() else None
        )
        group = str(Path(hydra_cfg.sweep.dir).resolve()) if sweeping else None
        name = job_name(hydra_cfg.overrides.task, run_dir)  # what the job changed: its name in the trackers
        summary = run(to_config(dcfg), run_dir, group=group, worker=worker, name=name)
    except NothingToTrain as done:
        restore_earlier_run_config()  # the rerun changed nothing, its .hydra/ record included
        print(f"{done}", file=sys.stderr)
        summary = done.summary
    except KeyboardInterrupt:
        print(f"interrupted; what was written is in {run_dir}", file=sys.stderr)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # At once: a chunk still running on the device would otherwise hold the exit until it ends.
        os._exit(128 + (_SIGNALS_RECEIVED[-1] if _SIGNALS_RECEIVED else signal.SIGINT))  # 130 or 143
    except Exception as e:  # noqa: BLE001 - every failure is recorded in the job's own directory
        user_error = isinstance(e, USER_ERRORS)
        if user_error and not sweeping:
            restore_earlier_run_config()  # refused: the directory's earlier run keeps its record
        try:
            record = record_failure(run_dir, failure_summary(dcfg, e), in_use=isinstance(e, RunDirectoryError))
            if not user_error:
                (run_dir / "error.txt").write_text(traceback.format_exc())
        except OSError as write_error:  # the directory itself is the problem: say the first error
            record = f"nothing written: {one_line(write_error)}"
        if sweeping:
            log.error("job failed: %s: %s (%s)", type(e).__name__, one_line(e), record)
            record_job_outcome("failed", f"{type(e).__name__}: {one_line(e)}")
            return float("nan")
        if user_error:
            print(f"error: {one_line(e)}", file=sys.stderr)
            raise SystemExit(2)
        raise
    print(
        json.dumps(
            {k: v for k, v in summary.items() if not isinstance(v, (list, dict)) or k == "generalization"}, indent=1
        )
    )
    print(f"results in {run_dir}")
    record_job_outcome(summary.get("status"), summary.get("error"))
    if summary.get("status") == "failed":
        if sweeping:
            log.error("job failed: %s", summary.get("error"))
            return float("nan")
        print(f"error: the run failed: {summary.get('error')}", file=sys.stderr)
        raise SystemExit(1)
    objective = summary.get(TASKS[summary["task"]].objective)
    return float("nan") if objective is None else float(objective)


def record_failure(run_dir: Path, failure: dict[str, Any], in_use: bool = False) -> Path:
    """Writes a failure into `summary.json`, or into `failure.json` when the directory already
    holds a run's summary (a rejected restart must not overwrite the record of the run before)
    or is `in_use` by another live run (whose summary is still to come). A summary that only
    records an earlier start that failed before training (no `steps`) gives way to the new one."""
    if in_use or (run_dir / "summary.json").exists() and not _failed_start(run_dir / "summary.json"):
        path = run_dir / "failure.json"
        atomic_write_json(path, failure)
        return path
    return write_summary(run_dir, failure)


def _failed_start(path: Path) -> bool:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") == "failed" and "steps" not in summary


if __name__ == "__main__":
    main()
