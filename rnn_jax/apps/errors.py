"""What the app prints when something goes wrong: one line, never a traceback from inside Hydra or
JAX, for a mistake a user can make (a bad value or key, an unparsable override, a file or a
directory), and where a job's failure is recorded."""

from __future__ import annotations

import dataclasses
import logging
import sys
import traceback
from pathlib import Path

from hydra.errors import InstantiationException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from rnn_jax.apps.hydra_callbacks import record_job_outcome, restore_earlier_run_config
from rnn_jax.config_checks import ConfigError
from rnn_jax.driver.backend import BackendError
from rnn_jax.driver.checkpoint import CheckpointError
from rnn_jax.driver.failures import failure_record, record_failure
from rnn_jax.driver.rundir import RunDirectoryError
from rnn_jax.tasks.charlm.corpus import CorpusError

log = logging.getLogger("rnn_jax")

# Errors a user can cause with a config value, a file or a directory: one line, no traceback.
USER_ERRORS = (ConfigError, BackendError, CheckpointError, CorpusError, RunDirectoryError, OSError)


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
    while error is not None and len(chain) < 8:
        chain.append(error)
        error = error.__cause__
    for e in chain:
        if isinstance(e, OverrideParseException):
            override = str(e).split(":", 1)[-1].strip().splitlines()[0].strip()
            key, _, value = override.partition("=")
            return (
                f"cannot parse the override {override!r}; "
                f"quote a value with special characters, e.g. '{key}=\"{value}\"'"
            )
        key, schema = getattr(e, "full_key", None), getattr(e, "object_type", None)
        if key and "not in" in str(e) and dataclasses.is_dataclass(schema):
            section = key.rpartition(".")[0]
            keys = ", ".join(f.name for f in dataclasses.fields(schema))
            moved = f" ({MOVED[key]})" if key in MOVED else ""
            return (
                f"{key} is not a setting of this run's {section or 'config'} ({schema.__name__}){moved}; "
                f"its keys: {keys}"
            )
        if key and "not in struct" in str(e) and schema is dict:
            section = key.rpartition(".")[0]
            return f"{key}: this run has no {section} settings (its preset sets {section}=null); remove {key}"
    innermost = next((str(e) for e in reversed(chain[1:]) if str(e)), None)
    if isinstance(chain[0], InstantiationException) and innermost:  # e.g. a launcher's setting refused
        return innermost.replace("\n", " ")
    messages = list(dict.fromkeys(str(e) for e in chain if str(e)))
    return " / ".join(m.replace("\n", " ") for m in messages)


def job_failed(error: Exception, dcfg: DictConfig, run_dir: Path, sweeping: bool) -> float:
    """A job that raised: the failure is recorded in its own directory (`summary.json`, or
    `failure.json` beside a run's earlier record); a sweep goes on (NaN for its sweeper), a single
    run ends with one line and exit 2 for a user's mistake, else with the traceback."""
    user_error = isinstance(error, USER_ERRORS)
    if user_error and not sweeping:
        restore_earlier_run_config()  # refused: the directory's earlier run keeps its record
    try:
        try:
            config = OmegaConf.to_container(dcfg, resolve=True)
        except Exception:  # noqa: BLE001 - an unresolvable config is recorded as it was written
            config = OmegaConf.to_container(dcfg, resolve=False)
        failure = failure_record(config, error)
        record = record_failure(run_dir, failure, in_use=isinstance(error, RunDirectoryError))
        if not user_error:
            (run_dir / "error.txt").write_text(traceback.format_exc())
    except OSError as write_error:  # the directory itself is the problem: say the first error
        record = f"nothing written: {one_line(write_error)}"
    if sweeping:
        log.error("job failed: %s: %s (%s)", type(error).__name__, one_line(error), record)
        record_job_outcome("failed", f"{type(error).__name__}: {one_line(error)}")
        return float("nan")
    if user_error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2)
    raise error
