"""Trackers: a real tiny training run feeds TensorBoard, MLflow and W&B (offline) at once, and each
tool's own reader must give back what `metrics.jsonl` and `summary.json` say: every scalar at its
step, the flattened config as hyperparameters, the summary's figures and status. Samples, NaN and
failures go through the loggers directly, without training. A slow-marked real multirun shows
one MLflow experiment per sweep with one run per job, and one TensorBoard run per job.

A tool whose package is missing is skipped (`pip install -e '.[tracking]'` installs them)."""

import importlib
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from rnn_testing import TINY as BASE
from rnn_testing import compose

from rnn_jax.driver.loggers import LoggerConfig, job_name, make_loggers
from rnn_jax.driver.loggers.mlflow import MLflowConfig, TrackerUnreachable
from rnn_jax.driver.loggers.naming import metric_name
from rnn_jax.driver.loggers.records import flatten, hyperparameters, scalars, summary_parts
from rnn_jax.driver.loggers.tensorboard import TensorBoardConfig
from rnn_jax.driver.loggers.wandb import WandbConfig
from rnn_jax.driver.loop import run
from rnn_jax.driver.provenance import PACKAGE_ROOT
from rnn_jax.driver.rundir import read_jsonl
from rnn_jax.tasks.base import ConfigError, log_every

# MLflow's SQL store, on this SQLAlchemy, warns of a loader strategy it still uses
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
# the module each logger imports first; None in sys.modules makes its import fail
IMPORTED = {"tensorboard": "tensorboard.summary.writer.event_file_writer", "mlflow": "mlflow", "wandb": "wandb"}


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


INSTALLED = [name for name, module in IMPORTED.items() if importable(module)]
# 4-bit sums, 2 seeds (so per_seed lists), 2 log lines; compiles and trains in about a second.
TINY = [*BASE, "task.seeds=2"]


def config(*overrides):
    return compose(*TINY, *overrides)


def needs(tool):
    if tool not in INSTALLED:
        pytest.skip(f"logger.{tool} needs the {PACKAGES[tool]} package: pip install -e '.[tracking]'")


# The job's name, as the app makes it from the overrides (`job_name`).
NAME = "model.hidden=4,task.seeds=2"
# Where each field of an addition record goes in the trackers, written out by hand.
GROUPS = {"loss": "train/loss", "accuracy": "train/accuracy", "elapsed": "perf/elapsed_seconds"}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One tiny addition run feeding every installed tracker: `(run_dir, records, summary)`."""
    if not INSTALLED:
        pytest.skip("no tracker installed: pip install -e '.[tracking]'")
    run_dir = tmp_path_factory.mktemp("tracked")
    summary = run(config(f"logger=[{','.join(INSTALLED)}]"), run_dir, name=NAME)
    records = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [r["step"] for r in records] == [20, 40]
    return run_dir, records, summary


def logged_series(records) -> dict[str, list[tuple[int, float]]]:
    """`{"train/loss": [(20, 0.69), (40, 0.68)], "per_seed/loss/0": ...}`: what every tracker must hold."""
    series: dict = {}
    for r in records:
        for key, value in scalars({k: v for k, v in r.items() if k != "step"}).items():
            series.setdefault(GROUPS.get(key, key), []).append((r["step"], value))
    return series


def expected_results(summary) -> dict[str, float]:
    """The figures a user compares addition runs by, picked from summary.json by hand."""
    return {
        "results/success_rate": summary["success_rate"],
        "results/final_accuracy": summary["final_accuracy"],
        **{f"results/generalization/{n}": v for n, v in summary["generalization"].items()},
    }


def git_head():
    """HEAD of the checkout rnn_jax runs from, asked of git directly; None outside a checkout."""
    command = ["git", "-C", str(PACKAGE_ROOT), "rev-parse", "HEAD"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def test_flatten_and_hyperparameters():
    record = {"loss": 0.5, "per_seed": {"loss": [1.0, 2.0]}, "val_bpc": None, "ok": True}
    assert scalars(record) == {"loss": 0.5, "per_seed/loss/0": 1.0, "per_seed/loss/1": 2.0, "ok": 1.0}
    assert flatten({"a": {"b": [1, {"c": 2}]}}, ".") == {"a.b.0": 1, "a.b.1.c": 2}
    config_ = {"model": {"hidden": 4, "cell": "lstm"}, "task": {"bits": [6, 8], "corpus": None}}
    hp = hyperparameters(config_, {"commit": "abc", "dirty": False})
    assert hp == {
        "model.hidden": 4,
        "model.cell": "lstm",
        "task.bits": "[6, 8]",
        "task.corpus": "null",
        "code.commit": "abc",
        "code.dirty": False,
    }


def test_a_job_is_named_by_its_overrides_and_its_fields_by_their_group():
    overrides = ["logger=[tensorboard,mlflow]", "model.hidden=4", "task.bits=6", "train.progress=false", "+logger.x=1"]
    assert job_name(overrides, Path("/s/sweep/0")) == "model.hidden=4,task.bits=6"
    assert job_name(["logger=mlflow"], Path("/r/14-02-11-7")) == "14-02-11-7"
    groups = {
        "loss": "train/loss",
        "accuracy": "train/accuracy",
        "train_loss": "train/loss",
        "train_bpc": "train/bpc",
        "val_bpc": "val/bpc",
        "chars_per_sec": "perf/chars_per_sec",
        "elapsed": "perf/elapsed_seconds",
        "per_seed/loss/1": "per_seed/loss/1",
        "predictions/3": "train/predictions/3",
    }
    assert {k: metric_name(k) for k in groups} == groups


def test_the_summary_is_split_into_results_throughput_and_bookkeeping(tmp_path):
    summary = {
        "status": "ok",
        "success_rate": 0.5,
        "final_val_bpc": 2.5,
        "best_val_bpc": 2.4,
        "generalization": {"16": 0.75},
        "generalization_per_seed": {"16": [1.0, 0.5]},
        "seed_values": [0, 1],
        "devices": 1,
        "steps_this_run": 40,
        "us_per_step": 12.5,
        "chars_per_second": 1e5,
        "resumed_from": str(tmp_path / "checkpoints" / "last" / "20"),
        "code": {"commit": "abc"},
        "config": {"model": {"hidden": 4}},
    }
    parts = summary_parts(summary, tmp_path)
    assert parts.results == {
        "results/success_rate": 0.5,
        "results/final_val_bpc": 2.5,
        "results/best_val_bpc": 2.4,
        "results/generalization/16": 0.75,
    }
    assert parts.throughput == {"results/us_per_step": 12.5, "results/chars_per_second": 1e5}
    assert parts.info == {
        "status": "ok",
        "generalization_per_seed.16": "[1.0, 0.5]",
        "seed_values": "[0, 1]",
        "devices": 1,
        "steps_this_run": 40,
        "resumed_from": "checkpoints/last/20",
    }


def test_log_every_auto_draws_a_curve_on_short_runs():
    from rnn_jax.driver.config import TrainConfig

    assert compose().train.log_every == "auto"
    assert [log_every(TrainConfig(steps=s)) for s in (1, 40, 2000, 20_000, 10**6)] == [1, 1, 10, 100, 100]
    assert log_every(TrainConfig(steps=2000, log_every=7)) == 7
    message = r"^train.log_every='often' is not allowed; allowed: auto, or an integer >= 1$"
    with pytest.raises(ConfigError, match=message):
        config("train.log_every=often")


def test_logger_group_composes_one_or_several_trackers():
    assert config().logger == LoggerConfig()
    assert config("logger=tensorboard").logger == LoggerConfig(tensorboard=TensorBoardConfig())
    both = config("logger=[tensorboard,mlflow]", "logger.mlflow.experiment=x").logger
    assert both == LoggerConfig(tensorboard=TensorBoardConfig(), mlflow=MLflowConfig(experiment="x"))
    assert config("logger=wandb").logger.wandb == WandbConfig(project="rnn_jax", mode="offline")


@pytest.mark.parametrize("tool", list(PACKAGES))
def test_a_missing_package_is_a_config_error_naming_the_extra(tool, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, IMPORTED[tool], None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=rf"^logger\.{tool}: needs the .* package: pip install -e '\.\[tracking\]'$"):
        run(config(f"logger={tool}"), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()  # stopped before training


def test_wandb_mode_is_checked(tmp_path):
    with pytest.raises(
        ConfigError, match="logger.wandb.mode='cloud' is not allowed; allowed: offline, online, disabled"
    ):
        make_loggers(LoggerConfig(wandb=WandbConfig(mode="cloud")), tmp_path)


def test_a_failing_tracker_warns_once_and_training_goes_on(caplog, tmp_path):
    class Broken:
        def start(self, config, code=None):
            pass

        def log(self, record):
            raise OSError("server gone")

    from rnn_jax.driver.loggers.protocol import Guarded

    logger = Guarded("mlflow", Broken())
    logger.start({})
    logger.log({"step": 1})
    logger.log({"step": 2})
    logger.finish({})  # not reached the broken tool again
    assert [r.getMessage() for r in caplog.records] == [
        "logger.mlflow failed (OSError: server gone); it stops for this run, metrics.jsonl goes on"
    ]


# -- TensorBoard -----------------------------------------------------------------------------------


def event_accumulator(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def hparams_data(acc, tag):
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(acc.PluginTagToContent("hparams")[tag])
    return data


def hparams_plugin(logdir: Path, route: str, request: dict) -> dict:
    """What TensorBoard's HParams plugin answers the UI on `route` (`/experiment`, `/session_groups`) for
    `logdir`: the plugin's own WSGI app over TensorBoard's own data provider, as `tensorboard --logdir` serves it."""
    from tensorboard.backend.event_processing import (
        data_provider,
        plugin_event_multiplexer,
    )
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin as plugin
    from tensorboard.plugins.scalar import scalars_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    context = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux, data_provider=provider)
    context.plugin_name_to_instance = {}
    context.plugin_name_to_instance["scalars"] = scalars_plugin.ScalarsPlugin(context)
    app = plugin.HParamsPlugin(context).get_plugin_apps()[route]
    body = json.dumps({"experimentName": "", **request})
    response = Client(app, Response).post(route, data=body, content_type="application/json")
    assert response.status_code == 200, response.data[:500]
    return json.loads(response.data)


def session_groups(logdir: Path) -> list[dict]:
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = {"allowedStatuses": statuses, "colParams": [], "startIndex": 0, "sliceSize": 100}
    return hparams_plugin(logdir, "/session_groups", request)["sessionGroups"]


def test_tensorboard_holds_every_curve_the_config_and_the_results(tracked):
    needs("tensorboard")
    run_dir, records, summary = tracked
    acc = event_accumulator(run_dir / "tensorboard" / NAME)
    for tag, expected in logged_series(records).items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    results = expected_results(summary)
    assert set(acc.Tags()["scalars"]) == {*logged_series(records), *results}  # no bookkeeping among the curves
    assert {k: acc.Scalars(k)[0].value for k in results} == pytest.approx(results)
    # The HParams tab, as its plugin serves it: one trial named by the job, the results as its only metrics.
    experiment = hparams_plugin(run_dir / "tensorboard", "/experiment", {})
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} == set(results)
    assert [h["name"] for h in experiment["hparamInfos"]][:2] == ["model.hidden", "task.seeds"]  # the name's, first
    (group,) = session_groups(run_dir / "tensorboard")
    assert group["name"] == NAME and group["sessions"][0]["status"] == "STATUS_SUCCESS"
    assert {m["name"]["tag"]: m["value"] for m in group["metricValues"]} == pytest.approx(results)
    hp = group["hparams"]
    assert hp["model.hidden"] == 4 and hp["model.cell"] == "elman" and hp["task.generalization_bits"] == "[6]"
    if git_head() is not None:  # outside a checkout the code is its version alone
        assert hp["code.commit"] == summary["code"]["commit"] == git_head()
    text = acc.Tensors("summary")[0].tensor_proto.string_val[0].decode()
    info = json.loads("\n".join(line[4:] for line in text.splitlines()))
    assert info["status"] == "ok" and info["seed_values"] == "[0, 1]" and info["devices"] == 1


# -- MLflow ----------------------------------------------------------------------------------------


def mlflow_client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_mlflow_run_holds_every_curve_the_params_and_the_results(tracked):
    needs("mlflow")
    run_dir, records, summary = tracked
    client = mlflow_client(run_dir / "mlflow")
    (experiment,) = [e for e in client.search_experiments() if e.name == "rnn_jax"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == NAME
    for key, expected in logged_series(records).items():
        got = history(client, mlrun.info.run_id, key)
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-12), key
    results = expected_results(summary)
    assert set(mlrun.data.metrics) == {*logged_series(records), *results, "results/us_per_step"}
    assert {k: mlrun.data.metrics[k] for k in results} == pytest.approx(results)
    params = mlrun.data.params
    assert params["model.hidden"] == "4" and params["task.generalization_bits"] == "[6]" and params["task.seeds"] == "2"
    tags = mlrun.data.tags
    assert tags["summary.status"] == "ok" and tags["summary.task"] == "addition"
    assert tags["summary.seed_values"] == "[0, 1]"
    assert tags["summary.devices"] == "1" and tags["summary.steps_this_run"] == "40"
    if git_head() is not None:
        assert tags["mlflow.source.git.commit"] == git_head() == summary["code"]["commit"]
    assert [a.path for a in client.list_artifacts(mlrun.info.run_id)] == ["summary.json"]
    assert str(run_dir / "mlflow" / "artifacts") in experiment.artifact_location


def test_the_mlflow_store_passes_the_ui_schema_check(tracked):
    """`mlflow ui`/`mlflow server` open a SQL store through `SqlAlchemyStore`, which refuses one whose
    schema revision is not the newest this MLflow knows ("out-of-date database schema"). The store
    written must pass that check, and name the MLflow version that wrote it (a viewer must be at
    least that version)."""
    needs("mlflow")
    import mlflow
    import sqlalchemy
    from alembic.migration import MigrationContext
    from mlflow.store.db.utils import _get_latest_schema_revision, _verify_schema
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    run_dir = tracked[0]
    uri = f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}"
    engine = sqlalchemy.create_engine(uri)
    _verify_schema(engine)  # raises MlflowException on an out-of-date schema
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == _get_latest_schema_revision()
    store = SqlAlchemyStore(uri, (run_dir / "mlflow" / "artifacts").as_uri())
    (mlrun,) = store.search_runs([store.get_experiment_by_name("rnn_jax").experiment_id], "", 1)
    assert mlrun.data.tags["rnn_jax.mlflow_version"] == mlflow.__version__


def test_what_the_trackers_store_names_no_path_of_this_machine(tracked):
    """Names are relative (the job's overrides, the sweep's relative name): no absolute path in the
    TensorBoard events, the W&B run, or MLflow's tables, but for MLflow's own pointers to its artifact
    folder (`artifact_location`, `artifact_uri`: MLflow makes a local one absolute)."""
    run_dir = tracked[0]
    here = [str(run_dir.resolve().parent).encode(), str(Path.cwd().resolve()).encode()]
    files = [*(run_dir / "tensorboard").rglob("events.*"), *(run_dir / "wandb").glob("offline-run-*/run-*.wandb")]
    files += [p for p in (run_dir / "wandb").glob("offline-run-*/files/*") if p.is_file()]
    for path in files:
        assert not any(h in path.read_bytes() for h in here), path
    if "mlflow" in INSTALLED:
        import sqlite3

        db = sqlite3.connect(run_dir / "mlflow" / "mlflow.db")
        tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
        pointers = {("experiments", "artifact_location"), ("runs", "artifact_uri")}
        for table in tables:
            for (column,) in [(r[1],) for r in db.execute(f"pragma table_info({table})")]:
                if (table, column) in pointers:
                    continue
                values = [v for (v,) in db.execute(f"select {column} from {table}") if isinstance(v, (str, bytes))]
                assert not [v for v in values if any(h.decode() in str(v) for h in here)], (table, column)
    assert len(files) >= ("tensorboard" in INSTALLED) + ("wandb" in INSTALLED)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then let go)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_mlflow_server_stops_the_run_at_once_with_one_line(tmp_path):
    needs("mlflow")
    import time

    url = f"http://127.0.0.1:{closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(TrackerUnreachable) as error:
        run(config("logger=mlflow", f"logger.mlflow.tracking_uri={url}"), tmp_path)
    assert time.perf_counter() - t0 < 15
    assert str(error.value) == f"logger.mlflow.tracking_uri={url}: connection refused"
    assert not (tmp_path / "metrics.jsonl").exists()  # before training


def test_a_tracking_server_lost_mid_run_warns_within_seconds(tracked, caplog):
    """A server gone after the start: the next log fails after MLflow's bounded retries, warns once, and the
    run goes on."""
    needs("mlflow")
    import time

    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tracked[0] / 'mlflow' / 'mlflow.db'}"
    cfg = LoggerConfig(mlflow=MLflowConfig(tracking_uri=store, experiment="lost"))
    (logger,) = make_loggers(cfg, tracked[0] / "lost")
    logger.start({"model": {"hidden": 4}})
    logger.logger.client = MlflowClient(tracking_uri=f"http://127.0.0.1:{closed_port()}")
    t0 = time.perf_counter()
    logger.log({"step": 1, "loss": 0.5})
    logger.log({"step": 2, "loss": 0.4})
    assert time.perf_counter() - t0 < 15
    # (whether the start's INFO line is captured too depends on the logging set up by earlier tests)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "rnn_jax" and r.levelname == "WARNING"]
    assert warning.startswith("logger.mlflow failed (")
    assert warning.endswith("it stops for this run, metrics.jsonl goes on")


# -- Weights & Biases ------------------------------------------------------------------------------


def wandb_records(run_dir: Path, attempt=None):
    """The records of the one offline W&B run under `run_dir` (or of the file `attempt`), parsed with W&B's own protobuf
    schema (`wandb.proto.wandb_internal_pb2.Record`). The .wandb file is W&B's header (":W&B",
    magic, version: 7 bytes) followed by LevelDB's log format: 32 KiB blocks of chunks, each
    `crc32c(4) length(2) type(1)`, type 1 a whole record, 2/3/4 its first, middle and last part."""
    import wandb
    from wandb.proto import wandb_internal_pb2

    wandb.teardown()  # `finish` returns before W&B's service has written the run out; this waits for it
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb") if attempt is None else [attempt]
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, parts = 7, 32 * 1024, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += block - pos % block
            continue
        parts = data[pos + 7 : pos + 7 + length] if kind in (1, 2) else parts + data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
    return records


def wandb_run(run_dir: Path, attempt=None) -> dict:
    """What the offline W&B run holds: history rows by step, config, final summary, files, exit."""
    out = {"history": {}, "config": {}, "summary": {}, "files": [], "exit_code": None, "run": None}
    for r in wandb_records(run_dir, attempt):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":  # a config update after the start
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            out["history"][row.pop("_step")] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "files":
            out["files"] += [f.path for f in r.files.files]
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def test_wandb_offline_run_holds_every_scalar_the_config_and_the_summary(tracked):
    needs("wandb")
    run_dir, records, summary = tracked
    wb = wandb_run(run_dir)
    assert wb["run"].display_name == NAME and wb["run"].project == "rnn_jax"
    expected: dict = {}
    for key, series in logged_series(records).items():
        for step, value in series:
            expected.setdefault(step, {})[key] = value
    assert wb["history"].keys() == expected.keys()
    for step, row in expected.items():
        assert wb["history"][step] == pytest.approx(row, rel=1e-12), step
    assert wb["config"]["model"]["hidden"] == 4 and wb["config"]["task"]["generalization_bits"] == [6]
    assert wb["config"]["code"]["commit"] == summary["code"]["commit"]
    results = expected_results(summary)
    assert {k: wb["summary"][k] for k in results} == pytest.approx(results)
    assert wb["config"]["summary"]["status"] == "ok" and wb["config"]["summary"]["devices"] == 1
    assert wb["exit_code"] == 0


# -- samples, NaN and failures, through the loggers directly ------------------------------------


@pytest.fixture(scope="module")
def direct(tracked, tmp_path_factory):
    """A run that logs NaN, infinity and None, writes a sample and fails; MLflow shares the
    tracked run's store (creating a SQLite store takes seconds)."""
    run_dir = tmp_path_factory.mktemp("direct")
    sample = run_dir / "samples" / "step_000010.txt"
    sample.parent.mkdir()
    sample.write_text("def f(x):\n    return x\n")
    cfg = LoggerConfig(
        tensorboard=TensorBoardConfig() if "tensorboard" in INSTALLED else None,
        mlflow=MLflowConfig(tracking_uri=f"sqlite:///{tracked[0] / 'mlflow' / 'mlflow.db'}", experiment="direct")
        if "mlflow" in INSTALLED
        else None,
        wandb=WandbConfig() if "wandb" in INSTALLED else None,
    )
    loggers = make_loggers(cfg, run_dir)
    for logger in loggers:
        logger.start({"model": {"hidden": 3}})
        logger.files([sample])
        logger.log({"step": 10, "loss": math.nan, "grad": math.inf, "val_bpc": None})
        logger.finish({"status": "failed", "steps": 10, "error": "FloatingPointError: nan"})
    return run_dir, cfg


def test_tensorboard_samples_nan_and_failure(direct):
    needs("tensorboard")
    acc = event_accumulator(direct[0] / "tensorboard" / direct[0].name)
    assert math.isnan(acc.Scalars("train/loss")[0].value) and acc.Scalars("train/grad")[0].value == math.inf
    assert "val/bpc" not in acc.Tags()["scalars"]
    (sample,) = acc.Tensors("samples")
    assert sample.step == 10 and sample.tensor_proto.string_val[0].decode() == "    def f(x):\n        return x"
    from tensorboard.plugins.hparams import api_pb2

    assert hparams_data(acc, "_hparams_/session_end_info").session_end_info.status == api_pb2.STATUS_FAILURE


def test_mlflow_samples_nan_and_failure(direct):
    needs("mlflow")
    run_dir, cfg = direct
    store = Path(cfg.mlflow.tracking_uri.removeprefix("sqlite:///")).parent
    client = mlflow_client(store)
    experiment = client.get_experiment_by_name("direct")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FAILED" and mlrun.data.tags["summary.error"] == "FloatingPointError: nan"
    assert math.isnan(mlrun.data.metrics["train/loss"]) and "val/bpc" not in mlrun.data.metrics
    assert mlrun.data.metrics["train/grad"] == sys.float_info.max  # MLflow's SQL store: infinity as the largest float
    (folder,) = client.list_artifacts(mlrun.info.run_id, "samples")
    assert folder.path == "samples/step_000010.txt"
    assert (
        experiment.artifact_location == (store / "artifacts").as_uri()
    )  # beside the store, not in the working directory


def test_wandb_samples_nan_and_failure(direct):
    needs("wandb")
    wb = wandb_run(direct[0])
    assert math.isnan(wb["history"][10]["train/loss"]) and wb["history"][10]["train/grad"] == math.inf
    assert "val/bpc" not in wb["history"][10]
    assert "samples/step_000010.txt" in wb["files"]
    assert wb["exit_code"] == 1


def test_a_resumed_run_continues_its_mlflow_and_wandb_runs(tracked, tmp_path):
    """A fresh run in a directory starts new tracker runs; one that continues the directory's
    history (metrics.jsonl kept up to its checkpoint) continues them (MLflow: the run tagged with
    the directory; W&B: the run id of the directory's `wandb/latest-run`)."""
    tools = [t for t in ("mlflow", "wandb") if t in INSTALLED]
    if not tools:
        pytest.skip("needs mlflow or wandb: pip install -e '.[tracking]'")
    store = f"sqlite:///{tracked[0] / 'mlflow' / 'mlflow.db'}"
    cfg = LoggerConfig(
        mlflow=MLflowConfig(tracking_uri=store, experiment="resumed") if "mlflow" in tools else None,
        wandb=WandbConfig() if "wandb" in tools else None,
    )
    for attempt, (steps, status) in enumerate([(10, "interrupted"), (20, "ok"), (30, "ok")]):
        if attempt == 1:  # the driver keeps the history up to the checkpoint it resumes from
            (tmp_path / "metrics.jsonl").write_text('{"step": 10, "loss": 0.1}\n')
        for logger in make_loggers(cfg, tmp_path):
            logger.start({"train": {"steps": steps}})
            logger.log({"step": steps, "loss": 1 / steps})
            logger.finish({"status": status, "steps": steps})
    if "mlflow" in tools:
        client = mlflow_client(tracked[0] / "mlflow")
        (mlrun,) = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
        assert mlrun.info.status == "FINISHED"
        assert history(client, mlrun.info.run_id, "train/loss") == [(10, 0.1), (20, 0.05), (30, 1 / 30)]
        assert mlrun.data.params["train.steps"] == "10"  # MLflow keeps a param's first value
    if "wandb" in tools:
        attempts = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(attempts) == 3 and len({p.name for p in attempts}) == 1  # one run id, three folders
        assert [wandb_run(tmp_path, a)["exit_code"] for a in attempts] == [130, 0, 0]


@pytest.mark.slow
def test_a_rerun_with_more_steps_continues_the_tracker_runs(tracked, tmp_path):
    """The driver resumes a finished run given more steps; MLflow, W&B and TensorBoard continue
    the same run, and hold the history `metrics.jsonl` holds."""
    tools = [t for t in ("tensorboard", "mlflow", "wandb") if t in INSTALLED]
    if not tools:
        pytest.skip("no tracker installed: pip install -e '.[tracking]'")
    store = f"logger.mlflow.tracking_uri=sqlite:///{tracked[0] / 'mlflow' / 'mlflow.db'}"
    overrides = [
        f"logger=[{','.join(tools)}]",
        *([store, "logger.mlflow.experiment=rerun"] if "mlflow" in tools else []),
    ]
    run(config(*overrides, "train.steps=20"), tmp_path)
    run(config(*overrides, "train.steps=40"), tmp_path)
    expected = logged_series(list(read_jsonl(tmp_path / "metrics.jsonl")))
    assert [s for s, _ in expected["train/loss"]] == [20, 40]
    if "mlflow" in tools:
        client = mlflow_client(tracked[0] / "mlflow")
        (mlrun,) = client.search_runs([client.get_experiment_by_name("rerun").experiment_id])
        assert history(client, mlrun.info.run_id, "train/loss") == expected["train/loss"]
    if "wandb" in tools:
        first, second = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
        assert first.name == second.name  # one W&B run id
        assert list(wandb_run(tmp_path, second)["history"]) == [40]
    if "tensorboard" in tools:
        (folder,) = (tmp_path / "tensorboard").iterdir()  # the second attempt continues the first's TensorBoard run
        loss = event_accumulator(folder).Scalars("train/loss")
        assert [e.step for e in loss] == [20, 40]
        assert [e.value for e in loss] == pytest.approx([v for _, v in expected["train/loss"]], rel=1e-6)  # float32


# -- a real sweep ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_experiment_with_one_run_per_job_and_one_tensorboard_run_each(
    tmp_path, app_in_process, monkeypatch
):
    """Run from `tmp_path` (so the sweep's relative name is `sweep`); each job is named by the overrides
    its `.hydra/overrides.yaml` records, less the tracker choice and the progress bar. The sweep
    runs in this process, through the app's own `main`, as `python -m rnn_jax.train -m` would."""
    needs("mlflow")
    needs("tensorboard")
    import yaml

    sweep = tmp_path / "sweep"
    args = [a for a in TINY if not a.startswith("model.hidden")]
    monkeypatch.chdir(tmp_path)
    proc = app_in_process("-m", "logger=[mlflow,tensorboard]", "model.hidden=2,4", *args, "hydra.sweep.dir=sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = []
    for job in ("0", "1"):
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        names.append(",".join(o for o in overrides if not o.startswith(("logger=", "train.progress="))))
    assert names[0].startswith("model.hidden=2,task.bits=4,") and names[1].startswith("model.hidden=4,")
    client = mlflow_client(sweep / "mlflow")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiment.name == "sweep"
    runs = sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.data.params["model.hidden"])
    assert [r.info.run_name for r in runs] == names
    assert [r.data.params["model.hidden"] for r in runs] == ["2", "4"]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    for job, r in zip(("0", "1"), runs):
        final = json.loads((sweep / job / "summary.json").read_text())["final_accuracy"]
        assert r.data.metrics["results/final_accuracy"] == pytest.approx(final)
        assert r.data.tags["rnn_jax.sweep"] == "sweep" and r.data.tags["rnn_jax.run_dir"] == f"sweep/{job}"
    groups = session_groups(sweep / "tensorboard")  # `tensorboard --logdir sweep/tensorboard`: one trial per job
    assert sorted(g["name"] for g in groups) == sorted(names)
