"""The record is the run: every setting in a composed config is read by the run, a setting of
another cell or task is refused, and a resume refuses or records a change of trajectory."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import pytest
from rnn_testing import TINY, compose

from rnn_jax.build import MODEL_CONFIGS
from rnn_jax.driver.checkpoint import CheckpointError
from rnn_jax.driver.loop import run
from rnn_jax.driver.optim import OPTIM_CONFIGS, SCHEDULE_KEYS
from rnn_jax.driver.resume import config_changes
from rnn_jax.tasks.registry import TASKS

CONFIG_CLASSES = {*MODEL_CONFIGS.values(), *OPTIM_CONFIGS.values(), *(s.config for s in TASKS.values())}
# Reads that are not the run using a setting: checking it, or copying the whole config into a record.
NOT_USE = {
    ("driver/config.py", "validate"), ("driver/config.py", "_check_schema"), ("task.py", "check"),
    ("tasks/base.py", "check_has_model"), ("dataclasses.py", "asdict"), ("dataclasses.py", "_asdict_inner"),
    ("driver/resume.py", "config_changes"),
}  # fmt: skip


@pytest.fixture
def reads(monkeypatch):
    """`(section, key)` of every read of a model, optim or task setting outside `NOT_USE`."""
    seen = set()
    sections = {c: "model" for c in MODEL_CONFIGS.values()} | {c: "optim" for c in OPTIM_CONFIGS.values()}
    for cls in CONFIG_CLASSES:
        names = {f.name for f in dataclasses.fields(cls)}
        section = sections.get(cls, "task")

        def getattribute(self, name, _names=names, _section=section, _get=object.__getattribute__):
            if name in _names:
                frame = sys._getframe(1)
                while frame is not None and not any(
                    frame.f_code.co_filename.endswith(f) and frame.f_code.co_name == n for f, n in NOT_USE
                ):
                    frame = frame.f_back
                if frame is None:
                    seen.add(f"{_section}.{name}")
            return _get(self, name)

        monkeypatch.setattr(cls, "__getattribute__", getattribute, raising=False)
    return seen


def keys_of(cfg) -> set[str]:
    """The model, optim and task keys of `cfg`, but the schedule keys of other schedules (null, and
    refused when set: `test_schedule_keys_exist_only_for_the_schedules_that_read_them`)."""
    others = {f"optim.{k}" for keys in SCHEDULE_KEYS.values() for k in keys} - {
        f"optim.{k}" for k in SCHEDULE_KEYS[cfg.optim.schedule]
    }
    sections = [s for s in ("model", "optim", "task") if getattr(cfg, s) is not None]
    return {f"{s}.{f.name}" for s in sections for f in dataclasses.fields(getattr(cfg, s))} - others


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("the cat sat on the mat. " * 40)
    return path


CHARLM = ["task.seq_len=8", "task.embedding=4", "model.hidden=4", "task.batch_size=2", "train.steps=4",
          "train.log_every=2", "task.eval_every=4", "task.eval_batches=1", "task.sample_length=2",
          "train.progress=false"]  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(
            (
                *TINY,
                "model=gru",
                "optim=rmsprop",
                "optim.schedule=exponential",
                "optim.decay_rate=0.9",
                "optim.decay_steps=5",
                "train.steps=20",
            ),
            id="addition-gru-rmsprop",
        ),
        pytest.param(("task=charlm", "model=lstm", "optim=momentum", *CHARLM), id="charlm-lstm-momentum"),
        pytest.param((*TINY, "optim=sgd", "train.steps=20"), id="addition-elman-sgd"),
        pytest.param((*TINY, "model=lru", "optim=adagrad", "train.steps=20"), id="addition-lru-adagrad"),
        pytest.param((*TINY, "model=mingru", "train.steps=20"), id="addition-mingru-adam"),
        pytest.param(("experiment=lstm2014", "train.steps=2"), id="lstm2014"),
    ],
)
def test_every_setting_of_the_composed_config_is_read_by_the_run(overrides, reads, corpus, tmp_path):
    """Each key of the chosen cell's, optimizer's and task's sections is used by the run (a
    setting that nothing reads would be a record of something that did not happen)."""
    cfg = compose(*overrides, *([f"task.corpus={corpus}"] if "task=charlm" in overrides else []))
    reads.clear()
    run(cfg, tmp_path)
    assert keys_of(cfg) - reads == set()


@pytest.mark.parametrize(
    "override, section, chosen",
    [
        ("model.forget_bias=2", "model", "ElmanConfig"),  # an LSTM setting on the default Elman cell
        ("model.activation=relu", "model", "LSTMConfig"),  # with model=lstm below
        ("task.seq_len=64", "task", "AdditionTask"),  # a char-LM setting on addition
        ("optim.momentum=0.5", "optim", "AdamConfig"),
        ("train.seeds=2", "train", "TrainConfig"),  # seeds are the addition task's
    ],
)
def test_a_setting_of_another_cell_task_or_optimizer_is_refused_in_one_line(
    override, section, chosen, app_in_process, tmp_path
):
    extra = ["model=lstm"] if chosen == "LSTMConfig" else []
    out = app_in_process(*extra, override, f"hydra.run.dir={tmp_path}")
    key = override.split("=")[0]
    assert out.returncode == 1 and "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {key} is not a setting of this run's {section} ({chosen})") and "its keys: " in line


def test_schedule_keys_exist_only_for_the_schedules_that_read_them():
    from rnn_jax.driver.config import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"optim\.decay_rate=0\.5 is not allowed; optim\.schedule=constant does not read it "
        r"\(only exponential does\)",
    ):
        compose("optim.decay_rate=0.5")
    with pytest.raises(ConfigError, match=r"optim\.schedule=warmup_cosine needs it: set optim\.warmup_steps"):
        compose("optim.schedule=warmup_cosine")


# --- resumes ---------------------------------------------------------------------------------


def test_config_changes_separate_trajectory_from_display():
    base = compose(*TINY)
    saved = dataclasses.asdict(base)
    assert (
        config_changes(
            saved, compose(*TINY, "train.log_every=10", "train.progress=true", "train.steps=80", "backend.devices=1")
        )
        == {}
    )
    assert config_changes(saved, compose(*TINY, "optim.lr=0.05", "task.batch_size=4")) == {
        "optim.lr": (0.01, 0.05),
        "task.batch_size": (8, 4),
    }
    cosine = compose(*TINY, "optim.schedule=cosine")
    assert config_changes(dataclasses.asdict(cosine), compose(*TINY, "optim.schedule=cosine", "train.steps=80")) == {
        "train.steps": (40, 80)
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("first")
    run(compose(*TINY), run_dir)
    return run_dir


def test_a_resume_with_another_learning_rate_is_refused_and_changes_nothing(first_run, tmp_path):
    shutil.copytree(first_run, tmp_path, dirs_exist_ok=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(
        CheckpointError,
        match=r"would change settings the run was trained with: optim\.lr=0\.01 \(now 0\.05\); "
        r".*train\.resume_changes=allow",
    ):
        run(compose(*TINY, "optim.lr=0.05", "train.steps=60"), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


def test_an_allowed_change_is_recorded_by_step_and_carried_by_later_resumes(first_run, tmp_path):
    shutil.copytree(first_run, tmp_path, dirs_exist_ok=True)
    summary = run(compose(*TINY, "optim.lr=0.05", "train.steps=60", "train.resume_changes=allow"), tmp_path)
    history = [{"from_step": 0}, {"from_step": 40, "changed": {"optim.lr": [0.01, 0.05]}}]
    assert summary["config_history"] == history and summary["config"]["optim"]["lr"] == 0.05
    assert json.loads((tmp_path / "summary.json").read_text())["config_history"] == history
    again = run(
        compose(*TINY, "optim.lr=0.05", "train.steps=80", "train.log_every=10"), tmp_path
    )  # no change of trajectory
    assert again["steps"] == 80 and again["config_history"] == history


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["experiment=lstm2014", "model.layers=2"],
            "error: model.layers: this run has no model settings (its preset sets model=null); remove model.layers",
        ),
        (
            ["task.corpus=~/x.txt"],
            "error: cannot parse the override 'task.corpus=~/x.txt'; quote a value with special characters, "
            "e.g. 'task.corpus=\"~/x.txt\"'",
        ),
        (
            ["model.cell=lstm"],
            "error: model.cell='lstm' is not allowed; the model group chose elman; choose another with model=lstm",
        ),
    ],
)
def test_start_up_mistakes_get_one_line_that_names_the_key(args, line, app_in_process, tmp_path):
    out = app_in_process(*args, f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == line


def test_a_write_that_fails_on_a_full_disk_names_its_file(tmp_path, monkeypatch):
    import errno
    import os

    from rnn_jax.driver.rundir import MetricsLog, atomic_write_bytes

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write to a full disk: no file named

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device") as info:
        atomic_write_bytes(tmp_path / "summary.json", b"{}")
    assert info.value.filename == str(tmp_path / "summary.json") and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(
        json, "dumps", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
    )
    with pytest.raises(OSError) as info:
        MetricsLog(tmp_path).write({"step": 1})
    assert info.value.filename == str(tmp_path / "metrics.jsonl")


def test_a_recorded_model_section_reads_back_as_its_cells_schema():
    """`sample` and `verify` rebuild a run's model from its record; a record made before the
    per-cell schemas (every cell's keys in one flat section) keeps only the recorded cell's."""
    from rnn_jax.build import LSTMConfig, recorded_model_config

    flat = {"cell": "lstm", "hidden": 8, "layers": 2, "activation": "tanh", "use_bias": True, "forget_bias": 0.5}
    assert recorded_model_config(flat) == LSTMConfig(hidden=8, layers=2, forget_bias=0.5)
    record = dataclasses.asdict(compose("model=gru", "model.hidden=5").model)
    assert dataclasses.asdict(recorded_model_config(record)) == record
