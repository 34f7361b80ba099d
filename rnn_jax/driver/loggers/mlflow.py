"""The MLflow tracker: one MLflow run per job through `MlflowClient`, in a SQLite store beside the run
or on a tracking server asked once at start (`logger=mlflow`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from rnn_jax.config_checks import ConfigError
from rnn_jax.driver.loggers.naming import RunNames, relative_name
from rnn_jax.driver.loggers.protocol import require
from rnn_jax.driver.loggers.records import hyperparameters, record_metrics, resuming, status_of, summary_parts
from rnn_jax.driver.rundir import atomic_write_bytes

log = logging.getLogger("rnn_jax")


@dataclass(frozen=True)
class MLflowConfig:
    tracking_uri: Optional[str] = None  # None: sqlite:///<run or sweep dir>/mlflow/mlflow.db
    experiment: Optional[str] = None  # None: the sweep's relative name in a sweep, else "rnn_jax"


# MLflow's HTTP client retries a request 7 times with growing waits, 120 s each (over 200 s for a
# server that is down); a run that cannot reach its server should say so at once. A user's own
# setting of these variables wins.
MLFLOW_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # MLflow's default: 7
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # 2
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",  # 120 s
}


class TrackerUnreachable(ConfigError):
    """A tracking server that does not answer at start."""

    def __init__(self, key: str, value: str, reason: str):
        ValueError.__init__(self, f"{key}={value}: {reason}")
        self.key = key


def unreachable_reason(error: BaseException) -> str:
    """A short cause for a failed request: `connection refused`, `timed out`, or the error's first line."""
    seen = set()
    e: Optional[BaseException] = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e):
            return "connection refused"
        if isinstance(e, TimeoutError) or "timed out" in str(e).lower():
            return "no answer (timed out)"
        e = e.__cause__ or e.__context__
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


class MLflowLogger:
    """An MLflow run through `MlflowClient` (no process-global active run, so sweep jobs in one
    process do not share state).

    The default store is SQLite in `<dir>/mlflow/mlflow.db` with artifacts in
    `<dir>/mlflow/artifacts`, `<dir>` being the sweep directory in a sweep (every job's run in one
    experiment named by the sweep's relative name) and the run directory otherwise. The run is named
    by the job's overrides; curves are metrics under their groups, the summary's results and
    throughput are metrics (`results/*`: the columns to sort runs by), its bookkeeping
    tags (`summary.*`), the code the MLflow tag `mlflow.source.git.commit` and `rnn_jax.*` tags.
    A server given by `tracking_uri` is asked once at start, and a run that cannot reach it stops
    there with one line. The run id is kept in `<run dir>/mlflow_run.json`; a run that continues
    its directory's history (`resuming`) continues that MLflow run (params already logged are
    kept: MLflow forbids changing one)."""

    def __init__(self, cfg: MLflowConfig, run_dir: Path, group: Optional[str], names: RunNames):
        require("logger.mlflow", "mlflow", "mlflow")
        self.entities = require("logger.mlflow", "mlflow.entities", "mlflow")
        if cfg.tracking_uri is None:
            require("logger.mlflow", "sqlalchemy", "sqlalchemy")  # mlflow-skinny's SQL store needs it
            require("logger.mlflow", "alembic", "alembic")
        self.cfg, self.run_dir, self.group, self.names = cfg, run_dir, group, names
        self.store = (Path(group) if group else run_dir).resolve() / "mlflow"
        self.client = self.run_id = None
        for key, value in MLFLOW_HTTP.items():  # MLflow reads them at each request
            os.environ.setdefault(key, value)
        if cfg.tracking_uri is not None and cfg.tracking_uri.startswith(("http://", "https://")):
            self._check_server()

    def _check_server(self) -> None:
        from mlflow.tracking import MlflowClient

        retries = logging.getLogger("urllib3.connectionpool")  # one line for the user, not one per retry
        level, _ = retries.level, retries.setLevel(logging.ERROR)
        try:
            MlflowClient(tracking_uri=self.cfg.tracking_uri).search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - any failure to answer is the one-line error
            reason = unreachable_reason(e)
            raise TrackerUnreachable("logger.mlflow.tracking_uri", self.cfg.tracking_uri, reason) from None
        finally:
            retries.setLevel(level)

    def _earlier_run(self, client) -> Optional[Any]:
        """The MLflow run this directory's earlier attempt logged to, when the run resumes it."""
        path = self.run_dir / "mlflow_run.json"
        if not (resuming(self.run_dir) and path.exists()):
            return None
        with contextlib.suppress(Exception):  # another store, a deleted run: a new run
            return client.get_run(json.loads(path.read_text())["run_id"])
        return None

    def start(self, config: dict, code: Optional[dict] = None) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        default_store = self.cfg.tracking_uri is None
        uri = f"sqlite:///{self.store / 'mlflow.db'}" if default_store else self.cfg.tracking_uri
        # a SQLite store keeps artifacts beside it (MLflow's default is ./mlruns of the working directory)
        artifacts = (
            (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
            if uri.startswith("sqlite:///")
            else None
        )
        name = self.cfg.experiment or self.names.group or "rnn_jax"
        with _locked(self.store / "lock" if default_store else None):  # parallel jobs: one creates the store
            self.client = client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    experiment_id = client.create_experiment(name, artifact_location=artifacts)
                except MlflowException:  # created meanwhile by another job of the sweep
                    experiment_id = client.get_experiment_by_name(name).experiment_id
            else:
                experiment_id = experiment.experiment_id
        earlier = self._earlier_run(client)
        logged: dict = {}
        if earlier is not None:
            self.run_id, logged = earlier.info.run_id, earlier.data.params
            client.update_run(self.run_id, status="RUNNING")
        else:
            code = code or {}
            tags = {
                "rnn_jax.run_dir": relative_name(self.run_dir),
                "rnn_jax.mlflow_version": mlflow.__version__,  # the UI must be at least this version
                **({"rnn_jax.sweep": self.names.group} if self.names.group else {}),
                **({"mlflow.source.git.commit": code["commit"]} if code.get("commit") else {}),
                **{f"rnn_jax.code.{k}": str(v) for k, v in code.items()},
            }
            self.run_id = client.create_run(experiment_id, run_name=self.names.run, tags=tags).info.run_id
            atomic_write_bytes(self.run_dir / "mlflow_run.json", json.dumps({"run_id": self.run_id}).encode())
        version = mlflow.__version__
        log.info(
            "logger.mlflow: run %r of experiment %r in %s; MLflow %s wrote it, so view it with MLflow %s or newer"
            " (docs/tracking.md)",
            self.names.run,
            name,
            uri,
            version,
            version,
        )
        params = [self.entities.Param(k, str(v)) for k, v in hyperparameters(config).items() if k not in logged]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(self.run_id, params=params[i : i + 100])

    def _metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        rows = [self.entities.Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(rows), 1000):
            self.client.log_batch(self.run_id, metrics=rows[i : i + 1000])

    def log(self, record: dict) -> None:
        step, metrics = record_metrics(record)
        self._metrics(metrics, step)

    def files(self, paths: list[Path]) -> None:
        for path in paths:
            parent = Path(path).parent
            sub = parent.relative_to(self.run_dir) if parent.is_relative_to(self.run_dir) else Path(".")
            self.client.log_artifact(self.run_id, str(path), None if str(sub) == "." else sub.as_posix())

    def finish(self, summary: dict) -> None:
        parts = summary_parts(summary, self.run_dir)
        self._metrics({**parts.results, **parts.throughput}, int(summary.get("steps", 0)))
        tags = [self.entities.RunTag(f"summary.{k}", str(v)[:8000]) for k, v in parts.info.items()]
        for i in range(0, len(tags), 100):
            self.client.log_batch(self.run_id, tags=tags[i : i + 100])
        if (self.run_dir / "summary.json").exists():
            self.client.log_artifact(self.run_id, str(self.run_dir / "summary.json"))
        status = {"ok": "FINISHED", "interrupted": "KILLED"}.get(status_of(summary), "FAILED")
        self.client.set_terminated(self.run_id, status)


@contextlib.contextmanager
def _locked(path: Optional[Path]) -> Iterator[None]:
    """An exclusive lock on `path` across processes (none where `fcntl` is not available)."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: jobs of one sweep rarely start at the same instant there
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
