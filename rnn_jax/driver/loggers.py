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

import contextlib
import importlib
import json
import logging
import numbers
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Protocol, Sequence

from rnn_jax.config_checks import ConfigError, check_choice
from rnn_jax.driver.rundir import atomic_write_bytes

log = logging.getLogger("rnn_jax")

INSTALL = "pip install -e '.[tracking]'"


@dataclass(frozen=True)
class TensorBoardConfig:
    dir: Optional[str] = None  # None: <sweep or run dir>/tensorboard/<job>; else <dir>/<sweep or run dir name>/<job>


@dataclass(frozen=True)
class MLflowConfig:
    tracking_uri: Optional[str] = None  # None: sqlite:///<run or sweep dir>/mlflow/mlflow.db
    experiment: Optional[str] = None  # None: the sweep's relative name in a sweep, else "rnn_jax"


@dataclass(frozen=True)
class WandbConfig:
    project: str = "rnn_jax"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled; offline needs no account and no network
    dir: Optional[str] = None  # None: the run directory (W&B writes <dir>/wandb/)


@dataclass(frozen=True)
class LoggerConfig:
    """Which trackers a run feeds (`logger=...` in conf/logger/); none by default."""

    tensorboard: Optional[TensorBoardConfig] = None
    mlflow: Optional[MLflowConfig] = None
    wandb: Optional[WandbConfig] = None


class Logger(Protocol):
    def start(self, config: dict, code: Optional[dict] = None) -> None: ...

    def log(self, record: dict) -> None: ...

    def files(self, paths: list[Path]) -> None: ...

    def finish(self, summary: dict) -> None: ...


class MissingPackage(ConfigError):
    """A tracker whose package is not installed."""

    def __init__(self, key: str, package: str):
        ValueError.__init__(self, f"{key}: needs the {package} package: {INSTALL}")
        self.key = key


def require(key: str, module: str, package: str):
    """`module`, imported now; `MissingPackage` naming `key` and the extra when it is absent."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackage(key, package) from e


# -- what every tracker is given ------------------------------------------------------------------


class RunNames(NamedTuple):
    """How a run is named in the trackers: relative names only, never a path of this machine.

    `run`: the job's overrides (`model.hidden=4,task.bits=6`), else its directory's name;
    `group`: the sweep's directory relative to the working directory (None for a run alone)."""

    run: str
    group: Optional[str]


def job_name(overrides: Sequence[str], run_dir: Path) -> str:
    """A job's name from its command-line overrides, less those that do not change the training (the
    trackers, the progress bar): `["logger=mlflow", "model.hidden=4"]` -> `model.hidden=4`; the run
    directory's name when nothing else was given."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("logger", "train.progress"))]
    return ",".join(kept) or Path(run_dir).name


def relative_name(path: Path) -> str:
    """`path` relative to the working directory (`experiments/multirun/2026-12-06/14-02-11-42`), or its last
    two parts when it lies elsewhere: a name that means the same on any machine."""
    path = Path(path).resolve()
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd().resolve()).as_posix()
    return "/".join(path.parts[-2:])


def dir_name(name: str) -> str:
    """`name` as one folder's name (TensorBoard names a run by its folder): no separators, at most 200 chars."""
    return name.replace("/", "_").replace("\\", "_")[:200] or "_"


def metric_name(key: str) -> str:
    """A record's field under the group a tracker shows it in: `train/`, `val/`, `perf/`, or `per_seed/` as it
    is. `loss` and `accuracy` (addition), `train_bpc` -> `train/bpc`, `val_bpc` -> `val/bpc`,
    `chars_per_sec` -> `perf/chars_per_sec`, `elapsed` -> `perf/elapsed_seconds`."""
    head, _, rest = key.partition("/")
    if head == "elapsed":
        return "perf/elapsed_seconds"
    if head.endswith("_per_sec"):
        return f"perf/{key}"
    for split in ("train", "val", "test"):
        if head.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1 :]}"
    return key if head in ("per_seed", "train", "val", "test", "perf") and rest else f"train/{key}"


def flatten(tree: Any, sep: str, lists: bool = True, prefix: str = "") -> dict[str, Any]:
    """The leaves of nested dicts (and lists, by index, when `lists`) under joined keys:
    `flatten({"per_seed": {"loss": [1, 2]}}, "/") == {"per_seed/loss/0": 1, "per_seed/loss/1": 2}`."""
    if isinstance(tree, dict):
        items = ((str(k), v) for k, v in tree.items())
    elif lists and isinstance(tree, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, sep, lists, f"{prefix}{sep}{key}" if prefix else key))
    return out


def scalars(tree: Any, prefix: str = "") -> dict[str, float]:
    """The numbers among `flatten(tree, "/", prefix=prefix)` as floats (booleans as 0/1); None
    and text are left out, NaN and infinities kept."""
    return {k: float(v) for k, v in flatten(tree, "/", prefix=prefix).items() if isinstance(v, numbers.Real)}


def as_text(value: Any) -> Any:
    """A number, a string or a bool as it is; anything else (lists, None) as JSON text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)


def hyperparameters(config: dict, code: Optional[dict] = None) -> dict[str, Any]:
    """The config flattened with dots, each value a number, a string or a bool (lists and None as
    JSON text), as the HParams plugin and MLflow params take them; `code` (provenance) as `code.*`."""
    return {k: as_text(v) for k, v in flatten({**config, **({"code": code} if code else {})}, ".", lists=False).items()}


def record_metrics(record: dict) -> tuple[int, dict[str, float]]:
    """`(step, metrics)` of a log record, each field under its group (`metric_name`)."""
    metrics = scalars({k: v for k, v in record.items() if k != "step"})
    return int(record["step"]), {metric_name(k): v for k, v in metrics.items()}


# The summary's results, what a user compares runs by: success rate, the final and best values, the
# generalisation per width (its mean over seeds).
RESULT = re.compile(r"(success_rate|final_.+|best_.+|generalization/[^/]+)")
THROUGHPUT = re.compile(r"us_per_step|.+_per_second")


class SummaryParts(NamedTuple):
    """A summary split by where each tracker puts it: `results` (`results/<key>`: TensorBoard's HParams
    metrics, MLflow run metrics, the W&B summary), `throughput` (`results/us_per_step`, ...: MLflow metrics
    and the W&B summary, beside the results, so that every one-point figure is in one group apart from the
    curves), `info` (everything else, bookkeeping as text: MLflow tags, TensorBoard text, W&B config)."""

    results: dict[str, float]
    throughput: dict[str, float]
    info: dict[str, Any]


def summary_parts(summary: dict, run_dir: Optional[Path] = None) -> SummaryParts:
    """`summary` (less its config and code) as `SummaryParts`; a path inside `run_dir` becomes relative to it."""
    fields = {k: v for k, v in summary.items() if k not in ("config", "code")}  # both recorded at start
    numbers_ = scalars(fields)
    results = {f"results/{k}": v for k, v in numbers_.items() if RESULT.fullmatch(k)}
    throughput = {f"results/{k}": v for k, v in numbers_.items() if THROUGHPUT.fullmatch(k)}
    taken = {k.partition("/")[2] for k in [*results, *throughput]}
    info = {}
    for key, value in flatten(fields, ".", lists=False).items():
        if key.replace(".", "/") in taken:
            continue
        if isinstance(value, str) and run_dir is not None and Path(value).is_absolute():
            with contextlib.suppress(ValueError):
                value = Path(value).resolve().relative_to(Path(run_dir).resolve()).as_posix()
        info[key] = as_text(value)
    return SummaryParts(results, throughput, info)


def sample_step(path: Path, default: int) -> int:
    """The step a file was written at, from its name (`samples/step_000200.txt`)."""
    m = re.search(r"step_(\d+)", Path(path).name)
    return int(m.group(1)) if m else default


def status_of(summary: dict) -> str:
    return summary.get("status", "ok")


def resuming(run_dir: Path) -> bool:
    """Whether the run continues a history in `run_dir`: before the loggers start, the driver
    keeps the `metrics.jsonl` lines up to the checkpoint it resumes from, and none on a fresh
    start."""
    path = Path(run_dir) / "metrics.jsonl"
    return path.exists() and path.stat().st_size > 0


# -- TensorBoard -----------------------------------------------------------------------------------


class TensorBoardLogger:
    """Event files written with TensorBoard's own writer and summary protos (no TensorFlow, no
    PyTorch): the `EventFileWriter` that `torch.utils.tensorboard` writes through, scalars as
    `simple_value`, text and hparams as the text and HParams plugins' summaries.

    One TensorBoard run per job, in a folder named after the job (`RunNames.run`) under the root a
    user opens: `<sweep dir>/tensorboard/` in a sweep, `<run dir>/tensorboard/` alone, or
    `<logger.tensorboard.dir>/<sweep or run dir name>/`. Curves under their groups (`train/loss`,
    `val/bpc`, `perf/chars_per_sec`); the summary's results once as `results/*`, the only metrics
    the HParams table shows (its experiment config says so); the config and the code as HParams;
    samples, the summary and its bookkeeping as text. The first event this process writes carries
    TensorBoard's purge marker at its step, so a run resumed from a checkpoint hides what an
    earlier attempt logged after that checkpoint."""

    def __init__(self, cfg: TensorBoardConfig, run_dir: Path, group: Optional[str], names: RunNames):
        require("logger.tensorboard", "tensorboard.summary.writer.event_file_writer", "tensorboard")
        if cfg.dir is not None:
            root = Path(cfg.dir).expanduser() / dir_name(Path(group or run_dir).name)
            trial = f"{Path(group or run_dir).name}/{names.run}"
        else:
            root, trial = (Path(group) if group else run_dir) / "tensorboard", names.run
        self.dir = root / dir_name(names.run)
        if cfg.dir is None and not group and resuming(run_dir) and root.is_dir():
            earlier = [p for p in root.iterdir() if p.is_dir()]  # a rerun with other overrides continues its run
            self.dir = earlier[0] if len(earlier) == 1 else self.dir
        self.run_dir, self.trial, self.name = run_dir, trial, names.run
        self.writer = None
        self.hparams: dict[str, Any] = {}
        self.results: list[str] = []
        self.step = 0

    def _write(self, summary, step: int, purge: bool = True) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if self.writer is None:
            self.writer = EventFileWriter(str(self.dir), flush_secs=30)
            if purge:  # TensorBoard drops earlier events at or after this step
                self.writer.add_event(
                    Event(step=step, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START))
                )
            start = hparams_pb(self.hparams, trial_id=self.trial)
            self.writer.add_event(Event(step=0, wall_time=time.time(), summary=start))
        self.writer.add_event(Event(step=step, wall_time=time.time(), summary=summary))

    def _scalars(self, values: dict[str, float], step: int, purge: bool = True) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write(Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()]), step, purge)

    def _text(self, tag: str, text: str, step: int, purge: bool = True) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        # indented: a Markdown code block, shown as written
        self._write(text_pb(tag, "\n".join("    " + line for line in text.splitlines())), step, purge)

    def _plugin_data(self, tag: str, data, step: int) -> None:
        """An HParams plugin record (the experiment's columns, a session's end) under `tag`."""
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import metadata

        value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
        self._write(Summary(value=[value]), step, purge=False)

    def start(self, config: dict, code: Optional[dict] = None) -> None:
        self.hparams = hyperparameters(config, code)

    def log(self, record: dict) -> None:
        self.step, metrics = record_metrics(record)
        self._scalars(metrics, self.step)
        self.writer.flush()

    def files(self, paths: list[Path]) -> None:
        for path in map(Path, paths):  # a sample is written before its step's record
            rel = path.relative_to(self.run_dir) if path.is_relative_to(self.run_dir) else Path(path.name)
            tag = rel.parent.as_posix() if rel.parent != Path(".") else rel.stem
            self._text(tag, path.read_text(encoding="utf-8", errors="replace"), sample_step(path, self.step))
        if self.writer is not None:
            self.writer.flush()

    def finish(self, summary: dict) -> None:
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        step = int(summary.get("steps", self.step))
        parts = summary_parts(summary, self.run_dir)
        # The HParams table's columns: the hyperparameters, those the job's name sets marked as differing (the
        # table shows those first), and the results, not every curve's last point.
        named = set(re.findall(r"(?:^|,)([A-Za-z_][\w.]*)=", self.name))
        experiment = api_pb2.Experiment(
            hparam_infos=[api_pb2.HParamInfo(name=k, differs=k in named) for k in self.hparams],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=k)) for k in parts.results],
        )
        self._plugin_data(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment), step)
        self._scalars(parts.results, step, purge=False)
        info = {**parts.info, **{k.partition("/")[2]: v for k, v in parts.throughput.items()}}
        self._text("summary", json.dumps(info, indent=1), step, purge=False)
        status = {"ok": api_pb2.STATUS_SUCCESS, "interrupted": api_pb2.STATUS_UNKNOWN}.get(
            status_of(summary), api_pb2.STATUS_FAILURE
        )
        end = plugin_data_pb2.HParamsPluginData(
            session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
        )
        self._plugin_data(metadata.SESSION_END_INFO_TAG, end, step)
        self.writer.close()
        self.writer = None


# -- MLflow ----------------------------------------------------------------------------------------

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


# -- Weights & Biases ------------------------------------------------------------------------------


class WandbLogger:
    """A W&B run, offline unless `mode=online`: everything lands in `<dir>/wandb/offline-run-*/`,
    which `wandb sync <that dir>` uploads later. A run that continues its directory's history
    (`resuming`) continues the W&B run of its `wandb/latest-run` (offline, each attempt is its own folder with
    the same run id, and `wandb sync` joins them). Named by the job's overrides, grouped by the sweep's
    relative name; its config is the nested config (W&B shows `model.hidden`) with the code under `code`
    and, at the end, the summary's bookkeeping under `summary`; the results and throughput go to the
    W&B summary. W&B's own machine and code capture (paths, git, the program) is off: the code is
    recorded as rnn_jax records it."""

    MODES = ("offline", "online", "disabled")

    def __init__(self, cfg: WandbConfig, run_dir: Path, group: Optional[str], names: RunNames):
        check_choice("logger.wandb.mode", cfg.mode, self.MODES)
        self.wandb = require("logger.wandb", "wandb", "wandb")
        self.cfg, self.run_dir, self.names = cfg, run_dir, names
        self.run = None

    def start(self, config: dict, code: Optional[dict] = None) -> None:
        cfg = self.cfg
        directory = self.run_dir if cfg.dir is None else Path(cfg.dir).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        latest = self.run_dir / "wandb" / "latest-run"  # W&B's own link to the directory's last run
        earlier = None
        if cfg.dir is None and resuming(self.run_dir):
            earlier = next((p.stem.removeprefix("run-") for p in latest.glob("run-*.wandb")), None)
        settings = self.wandb.Settings(
            x_disable_meta=True, disable_git=True, save_code=False, x_save_requirements=False, program="rnn_jax.train"
        )
        self.run = self.wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=cfg.mode,
            dir=str(directory),
            group=self.names.group[-128:] if self.names.group else None,  # W&B's limit on a group name
            name=self.names.run,
            id=earlier,
            resume="allow" if earlier else None,
            config={**config, **({"code": code} if code else {})},
            settings=settings,
            reinit="create_new",  # sweep jobs in one process: each its own run
        )

    def log(self, record: dict) -> None:
        step, metrics = record_metrics(record)
        self.run.log(metrics, step=step)

    def files(self, paths: list[Path]) -> None:
        for path in paths:
            base = self.run_dir if Path(path).is_relative_to(self.run_dir) else Path(path).parent
            self.run.save(str(path), base_path=str(base), policy="now")

    def finish(self, summary: dict) -> None:
        parts = summary_parts(summary, self.run_dir)
        self.run.summary.update({**parts.results, **parts.throughput})
        self.run.config.update({"summary": parts.info}, allow_val_change=True)
        self.run.finish(exit_code={"ok": 0, "interrupted": 130}.get(status_of(summary), 1))


# -- the registry ----------------------------------------------------------------------------------


class Guarded:
    """A logger whose failures after `start` warn once and end its tracking; training goes on."""

    def __init__(self, name: str, logger):
        self.name, self.logger, self.broken = name, logger, False

    def start(self, config: dict, code: Optional[dict] = None) -> None:
        self.logger.start(config, code)

    def _call(self, method: str, arg) -> None:
        if self.broken:
            return
        try:
            getattr(self.logger, method)(arg)
        except Exception as e:  # noqa: BLE001 - a tracker's failure must not end the training
            self.broken = True
            log.warning(
                "logger.%s failed (%s: %s); it stops for this run, metrics.jsonl goes on",
                self.name,
                type(e).__name__,
                e,
            )

    def log(self, record: dict) -> None:
        self._call("log", record)

    def files(self, paths: list[Path]) -> None:
        self._call("files", paths)

    def finish(self, summary: dict) -> None:
        self._call("finish", summary)


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
