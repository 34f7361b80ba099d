"""Sweeps: the presets compose into the real config, and real (tiny) multiruns — the default
launcher, joblib, submitit_local and Optuna — write one self-contained job directory each, record
failures in the failing job's own summary without stopping the sweep, and feed the report.

Multiruns run in a subprocess, as a user runs them, into `tmp_path`, all sharing one persistent
compilation cache so that jobs of the same shapes compile once for the whole module."""

import contextlib
import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rnn_jax.apps.hydra_callbacks import SweepRecord
from rnn_jax.apps.train import to_config  # registers the schema
from rnn_jax.driver import rundir
from rnn_jax.driver.checkpoint import steps_in

CONF = Path(__file__).resolve().parents[1] / "conf"
# A job that compiles and trains in a few seconds: 3-bit sums, 2 seeds, 2 chunks of 10 steps.
TINY = [
    "task.bits=3",
    "task.seeds=2",
    "train.steps=20",
    "train.log_every=10",
    "task.batch_size=16",
    "train.progress=false",
    "task.eval_samples=64",
    "task.generalization_bits=[6,8]",
    "task.generalization_samples=16",
    "task.carry_chain_lengths=[]",
    "task.long_random_bits=[]",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


def multirun(sweep_dir, *overrides, cache=None):
    """`python -m rnn_jax.train -m TINY overrides` into `sweep_dir`; returns the finished process."""
    args = [*TINY, *overrides, f"hydra.sweep.dir={sweep_dir}"]
    if cache is not None:
        args.append(f"backend.compilation_cache={cache}")
    return subprocess.run(
        [sys.executable, "-m", "rnn_jax.train", "-m", *args], capture_output=True, text=True, timeout=240
    )


def job_dirs(sweep_dir):
    return sorted((d for d in Path(sweep_dir).iterdir() if d.name.isdigit()), key=lambda d: int(d.name))


def summary_of(job_dir):
    return json.loads((job_dir / "summary.json").read_text())


def setting(summary, key):
    """A setting of the job's config, as its summary records it: `setting(s, "model.hidden")`."""
    section, name = key.split(".")
    return summary["config"][section][name]


def overrides_of(job_dir):
    return dict(o.split("=", 1) for o in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()))


def compose_config(*overrides, hydra=True):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def grid(params) -> list[dict]:
    """The jobs of the basic sweeper's `params` (comma-separated values per key)."""
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


@pytest.mark.parametrize(
    "sweep, count, cells, seeds",
    [
        ("capacity", 4 * 6 * 3, {"elman", "lstm", "gru"}, 8),
        ("capacity_cells", 4 * 2 * 7, {"elman", "lstm", "gru", "mingru", "minlstm", "lru", "rglru"}, 4),
    ],
)
def test_capacity_presets_are_their_grids_and_every_job_validates(sweep, count, cells, seeds):
    cfg = compose_config(f"sweep={sweep}")
    jobs = grid(cfg.hydra.sweeper.params)
    assert len(jobs) == count
    assert {j["model"] for j in jobs} == cells
    assert cfg.task.seeds == seeds and cfg.task.stop_when_solved
    assert cfg.train.steps % cfg.train.log_every == 0  # one chunk length: one compile per job
    schemas = {
        cell: compose_config(f"sweep={sweep}", f"model={cell}", hydra=False) for cell in cells
    }  # model=<cell>: its schema
    for job in jobs:  # each job's config, validated
        job_cfg = schemas[job["model"]].copy()
        for key, value in job.items():
            if key != "model":
                OmegaConf.update(job_cfg, key, yaml.safe_load(value))
        cfg = to_config(job_cfg)  # validated
        assert (cfg.model.cell, cfg.model.hidden) == (job["model"], int(job["model.hidden"]))


def test_backend_configs_default_to_a_compilation_cache_under_experiments():
    for name in ("auto", "cpu", "gpu", "tpu"):
        cache = compose_config(f"backend={name}").backend.compilation_cache
        assert cache is not None and Path(cache).parts[0] == "experiments"


def test_launcher_and_optuna_presets_compose():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    parallel = compose_config("hydra/launcher=parallel").hydra
    assert parallel.launcher._target_.endswith("JoblibLauncher")
    assert parallel.job.env_set.XLA_PYTHON_CLIENT_PREALLOCATE == "false"
    slurm = compose_config("hydra/launcher=slurm").hydra
    assert slurm.launcher._target_.endswith("SlurmLauncher") and slurm.launcher.gpus_per_node == 1
    optuna = compose_config("sweep=optuna").hydra.sweeper
    assert optuna._target_.endswith("OptunaSweeper") and optuna.direction == "maximize"
    assert set(optuna.params) == {"optim.lr", "model.hidden"}


@pytest.mark.slow
def test_multirun_writes_one_run_per_job_and_the_report_reads_them(tmp_path, cache_dir, capsys):
    sweep = tmp_path / "sweep"
    out = multirun(sweep, "task.bits=3,4", "model.hidden=2,4", cache=cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = job_dirs(sweep)
    assert [d.name for d in jobs] == ["0", "1", "2", "3"]
    for d in jobs:
        s, o = summary_of(d), overrides_of(d)
        assert s["status"] == "ok"
        assert (setting(s, "task.bits"), setting(s, "model.hidden")) == (int(o["task.bits"]), int(o["model.hidden"]))
        assert (d / "metrics.jsonl").is_file() and (d / "checkpoints" / "last").is_dir()
    assert {(setting(summary_of(d), "task.bits"), setting(summary_of(d), "model.hidden")) for d in jobs} == {
        (3, 2),
        (3, 4),
        (4, 2),
        (4, 4),
    }

    from rnn_jax.apps.report import main as report  # in process: the sweep above is the real CLI run

    capsys.readouterr()
    assert report([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "4 jobs" in printed and "4 ok" in printed
    with (sweep / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    for row, d in zip(rows, jobs):
        s = summary_of(d)
        assert (row["cell"], int(row["bits"]), int(row["hidden"])) == (
            setting(s, "model.cell"),
            setting(s, "task.bits"),
            setting(s, "model.hidden"),
        )
        assert float(row["success_rate"]) == s["success_rate"]
        assert float(row["final_accuracy"]) == s["final_accuracy"]
        assert float(row["compile_seconds"]) == s["compile_seconds"]
        solved = [x for x in s["steps_to_solve"] if x is not None]
        assert row["median_steps_to_solve"] == (str(float(np.median(solved))) if solved else "nan")
    md = (sweep / "report.md").read_text()
    for s in map(summary_of, jobs):
        assert (
            f"| {setting(s, 'model.cell')} | {setting(s, 'task.bits')} | {setting(s, 'model.hidden')} | 1 "
            f"| {setting(s, 'task.seeds')} |" in md
        )
    assert (sweep / "success.png").read_bytes()[:4] == b"\x89PNG"
    assert (sweep / "generalization.png").is_file()


@pytest.mark.slow
def test_failing_jobs_write_their_own_failure_and_the_sweep_goes_on(tmp_path, cache_dir, capsys):
    # Job 0: a bad combination (hidden 0), caught at validation. Job 1: a learning rate beyond
    # float32's range, so every seed's loss turns NaN: failed seeds, not an average of them.
    sweep = tmp_path / "sweep"
    out = multirun(sweep, "model.hidden=0,2", "optim.lr=1e39", cache=cache_dir)
    # Every job ran; the sweep then names the failed ones and exits 1, so a script can tell.
    assert out.returncode == 1, out.stderr[-2000:]
    assert "2 of 2 jobs did not end ok" in out.stderr and "job 0: failed: ConfigError: model.hidden=0" in out.stderr
    bad, nan = job_dirs(sweep)
    s = summary_of(bad)
    assert s["status"] == "failed" and "model.hidden" in s["error"]
    assert sorted(p.name for p in bad.iterdir()) == [".hydra", "summary.json", "train.log"]  # nothing else written
    assert "model.hidden=0 is not allowed" in (bad / "train.log").read_text()
    s = summary_of(nan)
    assert s["status"] == "failed" and "NaN" in s["error"] and "NaN" in (nan / "train.log").read_text()
    assert not (nan / "checkpoints" / "last").exists() or not steps_in(
        nan / "checkpoints" / "last"
    )  # nothing diverged was saved
    assert s["failed_seeds"] == s["seed_values"] and s["success_rate"] == 0.0 and s["final_accuracy"] == 0.0
    assert setting(s, "model.hidden") == 2 and all(
        a == 0.0 for accs in s["generalization_per_seed"].values() for a in accs
    )

    from rnn_jax.apps.report import main as report  # in process: the sweep above is the real CLI run

    capsys.readouterr()
    assert report([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "0 ok, 2 failed" in printed
    lines = printed.splitlines()
    assert any(line.startswith("job 0 ") and "model.hidden=0" in line for line in lines)
    assert any(line.startswith("job 1 ") and "NaN" in line for line in lines)


# One sweep per sweep directory, judged by its own jobs. In-process sweeps (`app_in_process`) of
# jobs that fail at the config check or at their directory's lock: no compilation, so cheap.
NO_LOGS = ["hydra/job_logging=none", "hydra/hydra_logging=none"]


@contextlib.contextmanager
def held_by_another_process(directory, name):
    """`directory/name` locked, as a live sweep (`.sweep.lock`) or run (`.lock`) holds it, by a
    separate process; yields its process id."""
    code = (  # rundir.py alone, without the package (and JAX) around it
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('rundir', sys.argv[1])\n"
        "rundir = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(rundir)\n"
        "with rundir.run_lock(sys.argv[2], sys.argv[3]):\n"
        "    print('held', flush=True)\n"
        "    input()\n"
    )
    args = [sys.executable, "-c", code, rundir.__file__, str(directory), name]
    holder = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.communicate("\n", timeout=30)


def test_a_sweep_into_a_directory_that_a_live_sweep_holds_is_refused_at_start(tmp_path, app_in_process):
    sweep = tmp_path / "sweep"
    with held_by_another_process(sweep, ".sweep.lock") as pid:
        out = app_in_process("-m", "model.hidden=0", f"hydra.sweep.dir={sweep}", *NO_LOGS)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: sweep directory {sweep} is in use by process {pid} on ")
    assert sorted(p.name for p in sweep.iterdir()) == [".sweep.lock"]  # no job started, nothing recorded


def test_a_rerun_of_a_sweep_continues_it_and_a_different_sweep_is_refused_naming_what_differs(tmp_path, app_in_process):
    sweep = tmp_path / "sweep"
    first = ["-m", "model.hidden=0", f"hydra.sweep.dir={sweep}", *NO_LOGS]
    for _ in range(2):  # the second time: the same sweep, so its job runs again and fails again
        out = app_in_process(*first)
        assert out.returncode == 1, out.stderr
        assert "job 0: failed: ConfigError: model.hidden=0 is not allowed" in out.stderr
        assert out.stderr.strip().splitlines()[-1].startswith("error: 1 of 1 jobs did not end ok")
    record = (sweep / "sweep.json").read_text()
    assert json.loads(record)["task_overrides"] == ["model.hidden=0"]
    out = app_in_process("-m", "model.hidden=-2", "train.steps=5", f"hydra.sweep.dir={sweep}", *NO_LOGS)
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: hydra.sweep.dir={sweep} holds another sweep (")
    assert "model.hidden: 0 there, -2 here" in line and "train.steps: absent there, 5 here" in line
    assert (sweep / "sweep.json").read_text() == record and "-2" not in out.stdout  # no job of it ran
    out = app_in_process(*first, "hydra.sweeper.max_batch_size=1")
    assert out.returncode == 2 and "hydra.sweeper.max_batch_size: absent there, 1 here" in out.stderr


def test_a_job_refused_its_directory_fails_the_sweep_whatever_summary_json_there_says(tmp_path, app_in_process):
    # Job 0's directory holds another run's ok summary, and that run is live: the job is refused
    # and records so itself; the sweep does not read the other run's summary as this job's.
    sweep = tmp_path / "sweep"
    other_run = {"status": "ok", "task": "addition"}
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "summary.json").write_text(json.dumps(other_run))
    with held_by_another_process(sweep / "0", ".lock") as pid:
        out = app_in_process("-m", *TINY, "model.hidden=4", f"hydra.sweep.dir={sweep}", *NO_LOGS)
    assert out.returncode == 1, out.stderr
    assert f"job 0: failed: RunDirectoryError: run directory {sweep / '0'} is in use by process {pid}" in out.stderr
    assert json.loads((sweep / "0" / "summary.json").read_text()) == other_run  # the live run's, untouched
    assert json.loads((sweep / "0" / "failure.json").read_text())["status"] == "failed"
    assert json.loads((sweep / "job_outcomes" / "0.json").read_text())["status"] == "failed"


def test_a_job_that_died_without_a_word_fails_the_sweep(tmp_path, capsys):
    # A job killed (or crashed in C++) leaves only the "running" its start wrote.
    sweep = tmp_path / "sweep"
    cfg = compose_config(f"hydra.sweep.dir={sweep}")
    record = SweepRecord()
    record.on_multirun_start(cfg)
    (sweep / "job_outcomes").mkdir()
    (sweep / "job_outcomes" / "0.json").write_text(json.dumps({"status": "ok"}))
    (sweep / "job_outcomes" / "1.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(SystemExit) as end:
        record.on_multirun_end(cfg)
    assert end.value.code == 1
    err = capsys.readouterr().err
    assert "job 1: did not finish" in err and "job 0" not in err and "1 of 2 jobs did not end ok" in err
