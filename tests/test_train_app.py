"""The Hydra app end to end: composing conf/, the run directory, errors, seeds."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from rnn_testing import TINY

from rnn_jax.apps.train import to_config
from rnn_jax.driver import checkpoint
from rnn_jax.driver.config import ConfigError
from rnn_jax.driver.loop import run
from rnn_jax.tasks.registry import TASKS

ROOT = Path(__file__).resolve().parents[1]


def compose_config(overrides=()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("config", overrides=list(overrides))


def test_tiny_run_writes_its_experiment_directory(tmp_path):
    cfg = to_config(compose_config(TINY + ["task.seeds=2"]))
    summary = run(cfg, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    for key in [
        "task",
        "seed_values",
        "steps",
        "final_accuracy",
        "per_seed_accuracy",
        "success_rate",
        "steps_to_solve",
        "generalization",
        "compile_seconds",
        "train_seconds",
        "backend",
        "device_kind",
        "jax_version",
    ]:
        assert key in summary, key
    assert summary["config"] == json.loads(json.dumps(dataclasses.asdict(cfg)))  # the whole config, as run
    assert summary["config"]["model"]["hidden"] == 4 and summary["config"]["task"]["bits"] == 4
    assert summary["steps"] == 40 and summary["seed_values"] == [0, 1]
    assert len(summary["per_seed_accuracy"]) == 2 and set(summary["generalization"]) == {"6"}
    assert summary["final_accuracy"] == pytest.approx(np.mean(summary["per_seed_accuracy"]))
    assert summary["eval_pairs"] == 64  # every pair of 3-bit operands
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [20, 40]
    assert all(len(r["per_seed"]["accuracy"]) == 2 for r in lines)
    assert lines[-1]["accuracy"] == summary["final_accuracy"]
    state, meta = checkpoint.load(tmp_path / "checkpoints" / "last")
    assert state["train"]["params"]["cell"]["w_h"].shape == (2, 4, 4) and meta["step"] == 40


def test_vmapped_seeds_equal_separate_runs(tmp_path):
    both = run(to_config(compose_config(TINY + ["task.seeds=2", "seed=5"])), tmp_path / "both")
    alone = run(to_config(compose_config(TINY + ["task.seeds=1", "seed=6"])), tmp_path / "alone")
    p_both = checkpoint.load(tmp_path / "both" / "checkpoints" / "last")[0]["train"]["params"]
    p_alone = checkpoint.load(tmp_path / "alone" / "checkpoints" / "last")[0]["train"]["params"]
    # Equal up to floating-point rounding: both start bit-identical, but the vmapped program
    # rounds differently, and the difference grows with the steps (measured on the CPU: 0 after
    # one step, 6e-8 after 40, 1.8e-7 after 200), so the bound grows with them too.
    tol = 2e-8 * 40  # train.steps=40
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1], b[0], rtol=0, atol=tol), p_both, p_alone)
    assert both["per_seed_accuracy"][1] == alone["per_seed_accuracy"][0]


@pytest.mark.parametrize(
    "override, key",
    [
        ("task.bits=0", "task.bits"),
        ("task.bits=1", "task.bits"),  # one operand pair, 0 + 0: nothing to learn
        ("model.hidden=0", "model.hidden"),
        ("model.cell=rnn", "model.cell"),
        ("model.layers=0", "model.layers"),
        ("model.activation=softsign", "model.activation"),
        ("model.init=he", "model.init"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-0.1", "optim.lr"),
        ("optim.name=adamw", "optim.name"),
        ("optim.schedule=linear", "optim.schedule"),
        ("train.steps=0", "train.steps"),
        ("task.batch_size=0", "task.batch_size"),
        ("task.seeds=0", "task.seeds"),
        ("train.dtype=float16", "train.dtype"),
        ("backend.name=xpu", "backend.name"),
        ("task.loss=hinge", "task.loss"),
        ("task.data=numpy2015", "task.data"),
        ("task.generalization_bits=[]", "task.generalization_bits"),
    ],
)
def test_each_bad_value_names_its_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        to_config(compose_config([override]))
    assert info.value.key == key
    assert "allowed" in str(info.value) or "must be" in str(info.value)


def app(*args, timeout=120):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "rnn_jax.train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def test_bad_value_is_one_line_without_traceback(tmp_path, app_in_process):
    out = app_in_process("model.hidden=0", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "error: model.hidden=0 is not allowed; must be >= 1"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_typo_and_wrong_type_fail_at_start_with_hydras_message(tmp_path, app_in_process):
    out = app("model.hiden=3", f"hydra.run.dir={tmp_path}")  # a real command line, once
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: model.hiden is not a setting of this run's model (ElmanConfig); its keys: cell, hidden")
    )
    out = app_in_process("train.steps=many", f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0 and "full_key: train.steps" in out.stderr and "Traceback" not in out.stderr


def test_missing_accelerator_is_an_error_not_a_silent_cpu_run(tmp_path, app_in_process):
    out = app_in_process("backend=gpu", *TINY, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, out.stderr
    assert "backend.name=gpu" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130)])  # SIGTERM -> 143: tests/test_faults.py
def test_interrupt_keeps_what_was_logged_and_checkpoints(tmp_path, signum, code):
    import time

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = [*TINY, "train.steps=100000000", "train.log_every=50", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnn_jax.train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    logged = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert summary["status"] == "interrupted"
    assert summary["steps"] == logged[-1]["step"] >= 100
    _, meta = checkpoint.load(tmp_path / "checkpoints" / "last")
    assert meta["step"] == summary["steps"]


def with_task(monkeypatch, piece: str, **replace):
    """The addition task with some functions of one piece (program, report) replaced, each
    given the original."""
    spec = TASKS["addition"]

    def make(*args):
        task = spec.make(*args)
        old = getattr(task, piece)
        return task._replace(**{piece: old._replace(**{k: f(getattr(old, k)) for k, f in replace.items()})})

    monkeypatch.setitem(TASKS, "addition", spec._replace(make=make))


def test_interrupt_while_compiling_leaves_a_summary(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    with_task(monkeypatch, "program", init=lambda init: interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(to_config(compose_config(TINY)), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 0 and summary["backend"] == "cpu"


def test_interrupt_while_saving_waits_for_the_summary_and_checkpoint(tmp_path, monkeypatch):
    def summarize_then_signal(summarize):
        def summarize_(*args):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the final evaluation
            return summarize(*args)

        return summarize_

    with_task(monkeypatch, "report", summarize=summarize_then_signal)
    with pytest.raises(KeyboardInterrupt):
        run(to_config(compose_config(TINY)), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 40  # training had ended: its figures stand
    assert checkpoint.load(tmp_path / "checkpoints" / "last")[1]["step"] == 40


def test_help_lists_exactly_the_apps_config_groups(app_in_process):
    """The help names its groups from conf/'s folders (Hydra's own list would show the bench's
    and the schema's entries too); it must name every option in conf/ and nothing else."""
    out = app_in_process("--help")
    assert out.returncode == 0, out.stderr
    listed = {}
    for line in out.stdout.split("== Config groups ==")[1].split("== Config")[0].strip().splitlines():
        group, options = line.split(":", 1)
        listed[group.lstrip("+")] = set(options.split("(")[0].replace(" ", "").split(","))
    conf = Path(ROOT) / "conf"
    on_disk = {
        g: {p.stem for p in (conf / g).glob("*.yaml")}
        for g in ("task", "model", "optim", "backend", "logger", "experiment", "sweep", "hydra/launcher")
    }
    assert listed == on_disk


def test_unknown_key_added_with_plus_is_refused():
    with pytest.raises(ConfigError, match="model has no key 'hiden'"):
        to_config(compose_config(["+model.hiden=4"]))
    with pytest.raises(ConfigError, match="the config has no key 'foo'"):
        to_config(compose_config(["+foo=1"]))


def test_rerun_that_does_not_fit_the_directorys_checkpoint_is_refused_and_keeps_the_first_run(tmp_path, app_in_process):
    """A rerun into a run directory resumes from its checkpoint: one with nothing left to train
    changes nothing, one with another model cannot resume and is refused with one line; either
    way the first run's files stay as they were."""
    assert app(*TINY, f"hydra.run.dir={tmp_path}").returncode == 0
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    out = app_in_process(*TINY, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0 and "nothing to train, nothing changed" in out.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    first = (tmp_path / "summary.json").read_text()
    metrics = (tmp_path / "metrics.jsonl").read_text()
    hydra_record = {p.name: p.read_text() for p in (tmp_path / ".hydra").iterdir()}
    assert "model=gru" not in hydra_record["overrides.yaml"]
    out = app_in_process(*TINY, "model=gru", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "does not fit this run" in out.stderr and "model.cell=elman (now gru)" in out.stderr
    assert "Traceback" not in out.stderr
    assert (tmp_path / "summary.json").read_text() == first
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    assert {p.name: p.read_text() for p in (tmp_path / ".hydra").iterdir()} == hydra_record
    assert json.loads((tmp_path / "failure.json").read_text())["status"] == "failed"


def test_a_run_whose_loss_diverges_fails_with_a_nonzero_exit(tmp_path, app_in_process):
    out = app_in_process(*TINY, "optim=sgd", "optim.lr=1e30", "model.activation=relu", f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_seeds"] == [0]
    assert out.returncode == 1 and "loss became NaN or Inf" in out.stderr.splitlines()[-1]


def test_a_gpu_job_after_a_cpu_job_in_one_process_is_refused_too():
    from rnn_jax.driver.backend import BackendError, select_backend

    assert select_backend("cpu")[1]["backend"] == "cpu"
    with pytest.raises(BackendError, match="no GPU"):
        select_backend("gpu")
    assert select_backend("auto")[1]["backend"] == "cpu"


def test_dtype_is_set_per_job_not_inherited_from_the_one_before(tmp_path):
    try:
        run(to_config(compose_config(TINY + ["train.dtype=float64"])), tmp_path / "f64")
        run(to_config(compose_config(TINY)), tmp_path / "f32")
    finally:
        jax.config.update("jax_enable_x64", False)
    for name, dtype in [("f64", np.float64), ("f32", np.float32)]:
        state, _ = checkpoint.load(tmp_path / name / "checkpoints" / "last")
        assert state["train"]["params"]["cell"]["w_h"].dtype == dtype


def test_the_default_job_learns_8_bit_addition(tmp_path):
    """`python -m rnn_jax.train` as it stands: it must add every 8-bit pair exactly, checked here by
    a NumPy forward pass of its checkpointed weights over all 16,384 pairs (not by rnn_jax's own
    evaluation)."""
    summary = run(to_config(compose_config(["train.progress=false"])), tmp_path)
    assert summary["status"] == "ok" and summary["success_rate"] == 1.0 and summary["steps"] < 2000
    state, _ = checkpoint.load(tmp_path / "checkpoints" / "last")
    cell, readout = (
        jax.tree.map(lambda a: np.asarray(a[0], np.float64), state["train"]["params"][k]) for k in ("cell", "readout")
    )
    a, b = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    a, b = a.ravel(), b.ravel()
    h = np.zeros((a.size, cell["w_h"].shape[0]))
    wrong = np.zeros(a.size, bool)
    for t in range(8):  # least significant bit first; elman, tanh
        x = np.stack([(a >> t) & 1, (b >> t) & 1], axis=1).astype(np.float64)
        h = np.tanh(x @ cell["w_x"] + h @ cell["w_h"] + cell["b"])
        bit = (h @ readout["w"] + readout["b"])[:, 0] > 0
        wrong |= bit != (((a + b) >> t) & 1).astype(bool)
    assert not wrong.any()
