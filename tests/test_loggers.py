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

from rnn_jax.driver.loggers import (
    LoggerConfig,
    MLflowConfig,
    TensorBoardConfig,
    WandbConfig,
    flatten,
    hyperparameters,
    make_loggers,
    run_name,
    scalars,
)
from rnn_jax.driver.loop import run
from rnn_jax.driver.rundir import read_jsonl
from rnn_jax.tasks.base import ConfigError
from rnn_testing import TINY as BASE
from rnn_testing import compose

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


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One tiny addition run feeding every installed tracker: `(run_dir, records, summary)`."""
    if not INSTALLED:
        pytest.skip("no tracker installed: pip install -e '.[tracking]'")
    run_dir = tmp_path_factory.mktemp("tracked")
    summary = run(config(f"logger=[{','.join(INSTALLED)}]"), run_dir)
    records = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [r["step"] for r in records] == [20, 40]
    return run_dir, records, summary


def logged_series(records) -> dict[str, list[tuple[int, float]]]:
    """`{"per_seed/loss/0": [(20, 0.69), (40, 0.68)], ...}`: what every tracker must hold."""
    series: dict = {}
    for r in records:
        for key, value in scalars({k: v for k, v in r.items() if k != "step"}).items():
            series.setdefault(key, []).append((r["step"], value))
    return series


def test_flatten_and_hyperparameters():
    record = {"loss": 0.5, "per_seed": {"loss": [1.0, 2.0]}, "val_bpc": None, "ok": True}
    assert scalars(record) == {"loss": 0.5, "per_seed/loss/0": 1.0, "per_seed/loss/1": 2.0, "ok": 1.0}
    assert flatten({"a": {"b": [1, {"c": 2}]}}, ".") == {"a.b.0": 1, "a.b.1.c": 2}
    hp = hyperparameters({"model": {"hidden": 4, "cell": "lstm"}, "task": {"bits": [6, 8], "corpus": None}})
    assert hp == {"model.hidden": 4, "model.cell": "lstm", "task.bits": "[6, 8]", "task.corpus": "null"}
    assert run_name(Path("/s/sweep/3"), "/s/sweep") == "sweep/3"
    assert run_name(Path("/r/14-02-11"), None) == "14-02-11"


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
    with pytest.raises(ConfigError, match="logger.wandb.mode='cloud' is not allowed; allowed: offline, online, disabled"):
        make_loggers(LoggerConfig(wandb=WandbConfig(mode="cloud")), tmp_path)


def test_a_failing_tracker_warns_once_and_training_goes_on(caplog, tmp_path):
    class Broken:
        def start(self, config):
            pass

        def log(self, record):
            raise OSError("server gone")

    from rnn_jax.driver.loggers import Guarded

    logger = Guarded("mlflow", Broken())
    logger.start({})
    logger.log({"step": 1})
    logger.log({"step": 2})
    logger.finish({})  # not reached the broken tool again
    assert [r.getMessage() for r in caplog.records] == ["logger.mlflow failed (OSError: server gone); it stops for this run, metrics.jsonl goes on"]


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


def test_tensorboard_holds_every_scalar_the_config_and_the_summary(tracked):
    needs("tensorboard")
    run_dir, records, summary = tracked
    acc = event_accumulator(run_dir / "tensorboard")
    for tag, expected in logged_series(records).items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    assert {"per_seed/loss/0", "per_seed/accuracy/1", "loss", "accuracy", "elapsed"} <= set(acc.Tags()["scalars"])
    final = acc.Scalars("summary/final_accuracy")
    assert [(e.step, e.value) for e in final] == [(40, pytest.approx(summary["final_accuracy"]))]
    assert acc.Scalars("summary/generalization/6")[0].value == pytest.approx(summary["generalization"]["6"])
    start = hparams_data(acc, "_hparams_/session_start_info").session_start_info.hparams
    assert start["model.hidden"].number_value == 4 and start["model.cell"].string_value == "elman"
    assert start["task.generalization_bits"].string_value == "[6]" and start["task.stop_when_solved"].bool_value is False
    from tensorboard.plugins.hparams import api_pb2

    assert hparams_data(acc, "_hparams_/session_end_info").session_end_info.status == api_pb2.STATUS_SUCCESS
    text = acc.Tensors("summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads("\n".join(line[4:] for line in text.splitlines()))["status"] == "ok"


# -- MLflow ----------------------------------------------------------------------------------------


def mlflow_client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_mlflow_run_holds_every_scalar_the_params_and_the_summary(tracked):
    needs("mlflow")
    run_dir, records, summary = tracked
    client = mlflow_client(run_dir / "mlflow")
    (experiment,) = [e for e in client.search_experiments() if e.name == "rnn_jax"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == run_dir.name
    assert mlrun.data.tags["rnn_jax.run_dir"] == str(run_dir.resolve())
    for key, expected in logged_series(records).items():
        got = history(client, mlrun.info.run_id, key)
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-12), key
    params = mlrun.data.params
    assert params["model.hidden"] == "4" and params["task.generalization_bits"] == "[6]" and params["task.seeds"] == "2"
    assert mlrun.data.metrics["summary/final_accuracy"] == pytest.approx(summary["final_accuracy"])
    assert mlrun.data.metrics["summary/per_seed_accuracy/1"] == pytest.approx(summary["per_seed_accuracy"][1])
    assert mlrun.data.tags["summary/status"] == "ok" and mlrun.data.tags["summary/task"] == "addition"
    assert [a.path for a in client.list_artifacts(mlrun.info.run_id)] == ["summary.json"]
    assert str(run_dir / "mlflow" / "artifacts") in experiment.artifact_location


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
    assert wb["run"].display_name == run_dir.name and wb["run"].project == "rnn_jax"
    expected = {r["step"]: scalars({k: v for k, v in r.items() if k != "step"}) for r in records}
    assert wb["history"].keys() == expected.keys()
    for step, row in expected.items():
        assert wb["history"][step] == pytest.approx(row, rel=1e-12), step
    assert wb["config"]["model"]["hidden"] == 4 and wb["config"]["task"]["generalization_bits"] == [6]
    assert wb["summary"]["summary/final_accuracy"] == pytest.approx(summary["final_accuracy"])
    assert wb["summary"]["summary/status"] == "ok"
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
        mlflow=MLflowConfig(tracking_uri=f"sqlite:///{tracked[0] / 'mlflow' / 'mlflow.db'}", experiment="direct") if "mlflow" in INSTALLED else None,
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
    acc = event_accumulator(direct[0] / "tensorboard")
    assert math.isnan(acc.Scalars("loss")[0].value) and acc.Scalars("grad")[0].value == math.inf
    assert "val_bpc" not in acc.Tags()["scalars"]
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
    assert mlrun.info.status == "FAILED" and mlrun.data.tags["summary/error"] == "FloatingPointError: nan"
    assert math.isnan(mlrun.data.metrics["loss"]) and "val_bpc" not in mlrun.data.metrics
    assert mlrun.data.metrics["grad"] == sys.float_info.max  # MLflow's SQL store keeps infinity as the largest float
    (folder,) = client.list_artifacts(mlrun.info.run_id, "samples")
    assert folder.path == "samples/step_000010.txt"
    assert experiment.artifact_location == (store / "artifacts").as_uri()  # beside the store, not in the working directory


def test_wandb_samples_nan_and_failure(direct):
    needs("wandb")
    wb = wandb_run(direct[0])
    assert math.isnan(wb["history"][10]["loss"]) and wb["history"][10]["grad"] == math.inf
    assert "val_bpc" not in wb["history"][10]
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
        assert mlrun.info.status == "FINISHED" and history(client, mlrun.info.run_id, "loss") == [(10, 0.1), (20, 0.05), (30, 1 / 30)]
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
    overrides = [f"logger=[{','.join(tools)}]", *([store, "logger.mlflow.experiment=rerun"] if "mlflow" in tools else [])]
    run(config(*overrides, "train.steps=20"), tmp_path)
    run(config(*overrides, "train.steps=40"), tmp_path)
    expected = logged_series(list(read_jsonl(tmp_path / "metrics.jsonl")))
    assert [s for s, _ in expected["loss"]] == [20, 40]
    if "mlflow" in tools:
        client = mlflow_client(tracked[0] / "mlflow")
        (mlrun,) = client.search_runs([client.get_experiment_by_name("rerun").experiment_id])
        assert history(client, mlrun.info.run_id, "loss") == expected["loss"]
    if "wandb" in tools:
        first, second = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
        assert first.name == second.name  # one W&B run id
        assert list(wandb_run(tmp_path, second)["history"]) == [40]
    if "tensorboard" in tools:
        loss = event_accumulator(tmp_path / "tensorboard").Scalars("loss")
        assert [e.step for e in loss] == [20, 40]
        assert [e.value for e in loss] == pytest.approx([v for _, v in expected["loss"]], rel=1e-6)  # float32


# -- a real sweep ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_experiment_with_one_run_per_job_and_one_tensorboard_run_each(tmp_path):
    needs("mlflow")
    needs("tensorboard")
    sweep = tmp_path / "sweep"
    args = [a for a in TINY if not a.startswith("model.hidden")]
    proc = subprocess.run(
        [sys.executable, "-m", "rnn_jax.train", "-m", "logger=[mlflow,tensorboard]", "model.hidden=2,4", *args, f"hydra.sweep.dir={sweep}"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow_client(sweep / "mlflow")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiment.name == str(sweep.resolve())
    runs = sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in runs] == ["sweep/0", "sweep/1"]
    assert [r.data.params["model.hidden"] for r in runs] == ["2", "4"]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    for job, r in zip(("0", "1"), runs):
        final = json.loads((sweep / job / "summary.json").read_text())["final_accuracy"]
        assert r.data.metrics["summary/final_accuracy"] == pytest.approx(final)
        assert r.data.tags["rnn_jax.sweep"] == str(sweep.resolve())
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    tensorboard = EventMultiplexer().AddRunsFromDirectory(str(sweep))
    tensorboard.Reload()
    assert sorted(tensorboard.Runs()) == ["0/tensorboard", "1/tensorboard"]
