"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) fed by the driver.

Each logger receives the composed config as hyperparameters when the run starts, every log record
(`metrics.jsonl`'s lines, indexed by `step`), the files the run writes for a person to look at
(the char-LM's samples), and the final summary. `metrics.jsonl` and `summary.json` are always
written; trackers are extra, and each is configured by its section of `logger` (conf/logger/):

    tensorboard  event files in <run dir>/tensorboard (one TensorBoard run per job), so that
                 `tensorboard --logdir <run or sweep dir>` shows every job
    mlflow       a SQLite store in <run dir>/mlflow/ (a sweep: one store in <sweep dir>/mlflow/,
                 one experiment named after the sweep directory, one MLflow run per job)
    wandb        offline by default, files in <run dir>/wandb/ (`wandb sync` uploads them later);
                 the sweep directory is the W&B group

What each receives, in every tool alike:

- hyperparameters: the config flattened with dots (`model.hidden`); lists and None as JSON text
  (`task.generalization_bits` = "[16, 32]") where the tool takes only numbers, strings and
  booleans. W&B receives the nested config, which it shows as `model.hidden` itself.
- metrics: every number of every record at the record's `step`, nested fields flattened with
  slashes (`per_seed/loss/0`, `per_seed/accuracy/1`); None (a field without a value) is left
  out, NaN and infinities are passed on as the tool stores them (MLflow's SQL store turns
  infinities into the largest float).
- the summary: its numbers as `summary/<key>` (`summary/success_rate`,
  `summary/generalization/16`) at the last step; its strings as MLflow tags and W&B summary
  fields, and the whole summary (less the config) as TensorBoard text; the run's status as the
  tool's own (MLflow FINISHED / KILLED / FAILED, the TensorBoard HParams session status, W&B's
  exit code).
- files: text samples as TensorBoard text at the step in their name (`samples/step_000200.txt`),
  MLflow artifacts and W&B run files, under their path in the run directory.

A logger whose tool fails after the run started (a tracking server gone) warns once and stops;
training goes on and `metrics.jsonl` keeps the record. A missing package is a `ConfigError` at
start, before anything compiles.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import numbers
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol

from rnn_jax.config_checks import ConfigError, check_choice

log = logging.getLogger("rnn_jax")

INSTALL = "pip install -e '.[tracking]'"


@dataclass(frozen=True)
class TensorBoardConfig:
    dir: Optional[str] = None  # None: <run dir>/tensorboard; else <dir>/<run name>, a root shared by runs


@dataclass(frozen=True)
class MLflowConfig:
    tracking_uri: Optional[str] = None  # None: sqlite:///<run or sweep dir>/mlflow/mlflow.db
    experiment: Optional[str] = None  # None: the sweep directory in a sweep, else "rnn_jax"


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
    def start(self, config: dict) -> None: ...

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


def hyperparameters(config: dict) -> dict[str, Any]:
    """The config flattened with dots, each value a number, a string or a bool (lists and None as
    JSON text), as the HParams plugin and MLflow params take them."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in flatten(config, ".", lists=False).items()}


def record_metrics(record: dict) -> tuple[int, dict[str, float]]:
    """`(step, metrics)` of a log record."""
    return int(record["step"]), scalars({k: v for k, v in record.items() if k != "step"})


def summary_fields(summary: dict) -> tuple[dict[str, float], dict[str, str]]:
    """`(numbers, texts)` of a summary, less its config, flattened under `summary/`."""
    fields = {k: v for k, v in summary.items() if k != "config"}
    texts = {k: v for k, v in flatten(fields, "/", prefix="summary").items() if isinstance(v, str)}
    return scalars(fields, prefix="summary"), texts


def run_name(run_dir: Path, group: Optional[str]) -> str:
    """The run's name in a tracker: `<sweep dir name>/<job>` in a sweep (`14-02-11/3`), else the
    run directory's name."""
    if group:
        with contextlib.suppress(ValueError):
            return str(Path(run_dir).resolve().relative_to(Path(group).parent))
    return Path(run_dir).name


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

    Scalars under the record's keys; the flattened config in the HParams plugin (session start,
    and the session's end status at `finish`), so TensorBoard's HParams tab lists every job of a
    sweep; samples and the summary as text. The first event this process writes carries
    TensorBoard's purge marker at its step, so a run resumed from a checkpoint hides what an
    earlier attempt logged after that checkpoint."""

    def __init__(self, cfg: TensorBoardConfig, run_dir: Path, group: Optional[str]):
        require("logger.tensorboard", "tensorboard.summary.writer.event_file_writer", "tensorboard")
        self.dir = run_dir / "tensorboard" if cfg.dir is None else Path(cfg.dir).expanduser() / run_name(run_dir, group)
        self.run_dir = run_dir
        self.writer = None
        self.hparams: dict[str, Any] = {}
        self.step = 0

    def _write(self, summary, step: int, purge: bool = True) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if self.writer is None:
            self.writer = EventFileWriter(str(self.dir), flush_secs=30)
            if purge:  # TensorBoard drops earlier events at or after this step
                self.writer.add_event(Event(step=step, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START)))
            self.writer.add_event(Event(step=0, wall_time=time.time(), summary=hparams_pb(self.hparams, trial_id=str(self.run_dir.resolve()))))
        self.writer.add_event(Event(step=step, wall_time=time.time(), summary=summary))

    def _scalars(self, values: dict[str, float], step: int, purge: bool = True) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write(Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()]), step, purge)

    def _text(self, tag: str, text: str, step: int, purge: bool = True) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        # indented: a Markdown code block, shown as written
        self._write(text_pb(tag, "\n".join("    " + line for line in text.splitlines())), step, purge)

    def start(self, config: dict) -> None:
        self.hparams = hyperparameters(config)

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
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        step = int(summary.get("steps", self.step))
        numbers_, _ = summary_fields(summary)
        self._scalars(numbers_, step, purge=False)
        self._text("summary", json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1, default=str), step, purge=False)
        status = {"ok": api_pb2.STATUS_SUCCESS, "interrupted": api_pb2.STATUS_UNKNOWN}.get(status_of(summary), api_pb2.STATUS_FAILURE)
        end = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time()))
        value = Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(end), tensor=metadata.NULL_TENSOR)
        self._write(Summary(value=[value]), step, purge=False)
        self.writer.close()
        self.writer = None


# -- MLflow ----------------------------------------------------------------------------------------


class MLflowLogger:
    """An MLflow run through `MlflowClient` (no process-global active run, so sweep jobs in one
    process do not share state).

    The default store is SQLite in `<dir>/mlflow/mlflow.db` with artifacts in
    `<dir>/mlflow/artifacts`, `<dir>` being the sweep directory in a sweep (every job's run in one
    experiment named after the sweep) and the run directory otherwise. Each MLflow run carries
    the tag `rnn_jax.run_dir`; a run that continues its directory's history (`resuming`) continues
    the MLflow run of that directory (params already logged are kept: MLflow forbids changing one)."""

    def __init__(self, cfg: MLflowConfig, run_dir: Path, group: Optional[str]):
        require("logger.mlflow", "mlflow", "mlflow")
        self.entities = require("logger.mlflow", "mlflow.entities", "mlflow")
        if cfg.tracking_uri is None:
            require("logger.mlflow", "sqlalchemy", "sqlalchemy")  # mlflow-skinny's SQL store needs it
            require("logger.mlflow", "alembic", "alembic")
        self.cfg, self.run_dir, self.group = cfg, run_dir, group
        self.store = (Path(group) if group else run_dir).resolve() / "mlflow"
        self.client = self.run_id = None

    def start(self, config: dict) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        default_store = self.cfg.tracking_uri is None
        uri = f"sqlite:///{self.store / 'mlflow.db'}" if default_store else self.cfg.tracking_uri
        # a SQLite store keeps artifacts beside it (MLflow's default is ./mlruns of the working directory)
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
        name = self.cfg.experiment or (self.group if self.group else "rnn_jax")
        run_dir = str(self.run_dir.resolve())
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
        earlier = []
        if resuming(self.run_dir) and "'" not in run_dir:
            earlier = client.search_runs([experiment_id], filter_string=f"tags.`rnn_jax.run_dir` = '{run_dir}'", max_results=1)
        logged: dict = {}
        if earlier:
            self.run_id = earlier[0].info.run_id
            logged = earlier[0].data.params
            client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {"rnn_jax.run_dir": run_dir, **({"rnn_jax.sweep": self.group} if self.group else {})}
            self.run_id = client.create_run(experiment_id, run_name=run_name(self.run_dir, self.group), tags=tags).info.run_id
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
        numbers_, texts = summary_fields(summary)
        self._metrics(numbers_, int(summary.get("steps", 0)))
        tags = [self.entities.RunTag(k, v[:8000]) for k, v in texts.items()]
        if tags:
            self.client.log_batch(self.run_id, tags=tags)
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
    the same run id, and `wandb sync` joins them). Its config is the nested config (W&B shows
    `model.hidden`)."""

    MODES = ("offline", "online", "disabled")

    def __init__(self, cfg: WandbConfig, run_dir: Path, group: Optional[str]):
        check_choice("logger.wandb.mode", cfg.mode, self.MODES)
        self.wandb = require("logger.wandb", "wandb", "wandb")
        self.cfg, self.run_dir, self.group = cfg, run_dir, group
        self.run = None

    def start(self, config: dict) -> None:
        cfg = self.cfg
        directory = self.run_dir if cfg.dir is None else Path(cfg.dir).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        latest = self.run_dir / "wandb" / "latest-run"  # W&B's own link to the directory's last run
        earlier = None
        if cfg.dir is None and resuming(self.run_dir):
            earlier = next((p.stem.removeprefix("run-") for p in latest.glob("run-*.wandb")), None)
        self.run = self.wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=cfg.mode,
            dir=str(directory),
            group=self.group[-128:] if self.group else None,  # W&B's limit on a group name
            name=run_name(self.run_dir, self.group),
            id=earlier,
            resume="allow" if earlier else None,
            config=config,
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
        numbers_, texts = summary_fields(summary)
        self.run.summary.update({**numbers_, **texts})
        self.run.finish(exit_code={"ok": 0, "interrupted": 130}.get(status_of(summary), 1))


# -- the registry ----------------------------------------------------------------------------------


class Guarded:
    """A logger whose failures after `start` warn once and end its tracking; training goes on."""

    def __init__(self, name: str, logger):
        self.name, self.logger, self.broken = name, logger, False

    def start(self, config: dict) -> None:
        self.logger.start(config)

    def _call(self, method: str, arg) -> None:
        if self.broken:
            return
        try:
            getattr(self.logger, method)(arg)
        except Exception as e:  # noqa: BLE001 - a tracker's failure must not end the training
            self.broken = True
            log.warning("logger.%s failed (%s: %s); it stops for this run, metrics.jsonl goes on", self.name, type(e).__name__, e)

    def log(self, record: dict) -> None:
        self._call("log", record)

    def files(self, paths: list[Path]) -> None:
        self._call("files", paths)

    def finish(self, summary: dict) -> None:
        self._call("finish", summary)


# name (a LoggerConfig field) -> factory(section config, run_dir, group) -> Logger
LOGGERS: dict = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger}


def make_loggers(cfg: LoggerConfig, run_dir: Path, group: Optional[str] = None) -> list:
    """The loggers `cfg` turns on, for the run in `run_dir` (`group`: the sweep it belongs to).
    Each imports its package now, so a missing one stops the run before it compiles."""
    return [Guarded(name, LOGGERS[name](section, Path(run_dir), group)) for name, section in vars(cfg).items() if section is not None]
