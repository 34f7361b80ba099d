"""Hydra's launchers (joblib's worker processes, submitit) and the Optuna sweeper, each on two
tiny jobs through the real command line: a file of its own, so that these slow tests run beside
the rest of the sweep tests rather than after them."""

import json

import pytest
import yaml
from test_sweeps import job_dirs, multirun, overrides_of, setting, summary_of


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


LAUNCHERS = {  # plugin, overrides, and what shows the jobs ran through it
    "joblib": (
        "hydra_plugins.hydra_joblib_launcher",
        ["hydra/launcher=parallel"],
        lambda out, sweep: "Joblib.Parallel(n_jobs=2" in out.stderr + out.stdout,
    ),
    "submitit_local": (
        "hydra_plugins.hydra_submitit_launcher",
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
        lambda out, sweep: (sweep / ".submitit").is_dir(),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_launcher_runs_two_jobs_in_worker_processes(tmp_path, cache_dir, launcher):
    plugin, overrides, ran_through_it = LAUNCHERS[launcher]
    pytest.importorskip(plugin)
    sweep = tmp_path / "sweep"
    out = multirun(sweep, *overrides, "model.hidden=2,4", cache=cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert ran_through_it(out, sweep)
    jobs = job_dirs(sweep)
    assert [summary_of(d)["status"] for d in jobs] == ["ok", "ok"]
    assert [setting(summary_of(d), "model.hidden") for d in jobs] == [2, 4]
    # Each job, in its worker process, wrote its own outcome for the sweeping process to judge.
    outcomes = [json.loads((sweep / "job_outcomes" / f"{d.name}.json").read_text()) for d in jobs]
    assert [(o["status"], o["dir"]) for o in outcomes] == [("ok", str(d)) for d in jobs]


@pytest.mark.slow
def test_optuna_preset_maximises_the_success_rate_the_jobs_return(tmp_path, cache_dir):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    out = multirun(sweep, "sweep=optuna", "hydra.sweeper.n_trials=2", "model.hidden=choice(2,4)", cache=cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    summaries = [summary_of(d) for d in jobs]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optim.lr", "model.hidden"}
    assert result["best_value"] == max(s["success_rate"] for s in summaries)
    for d, s in zip(jobs, summaries):
        assert setting(s, "optim.lr") == pytest.approx(float(overrides_of(d)["optim.lr"]))
