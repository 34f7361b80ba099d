"""The sweep report on hand-made sweep directories: one row per job with its summary's figures,
failed, interrupted and still-running jobs named, seeds pooled across jobs that share
(cell, bits, hidden), and one-line errors for bad input. (test_sweeps.py runs it on real sweeps.)"""

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from rnn_jax.apps import report, report_jobs, report_plots


def summary(
    cell="lstm",
    bits=4,
    hidden=4,
    acc=(1.0, 1.0, 0.5),
    steps=(100, 300, None),
    failed=(),
    lr=0.01,
    backend="cpu",
    status="ok",
):
    acc = list(acc)
    return {
        "status": status,
        "task": "addition",
        "seed_values": list(range(len(acc))),
        "steps": 400,
        "final_accuracy": float(np.mean(acc)),
        "per_seed_accuracy": acc,
        "success_rate": float(np.mean(np.asarray(acc) == 1.0)),
        "steps_to_solve": list(steps),
        "failed_seeds": list(failed),
        "generalization": {"8": float(np.mean(acc)) / 2, "16": 0.0},
        "generalization_per_seed": {"8": [a / 2 for a in acc], "16": [0.0] * len(acc)},
        "compile_seconds": 1.5,
        "train_seconds": 0.25,
        "us_per_step": 625.0,
        "backend": backend,
        "config": config(cell, bits, hidden, lr, len(acc)),
    }


def config(cell, bits, hidden, lr=0.01, seeds=3):
    """The part of a summary's "config" the report reads."""
    return {
        "task": {"name": "addition", "bits": bits, "seeds": seeds},
        "model": {"cell": cell, "hidden": hidden, "layers": 1},
        "optim": {"name": "adam", "lr": lr},
    }


def make_job(sweep, num, summ=None, overrides=(), config=None, metrics=()):
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    if config is not None:
        (d / ".hydra" / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    if summ is not None:
        (d / "summary.json").write_text(json.dumps(summ))
    if metrics:
        (d / "metrics.jsonl").write_text(
            "".join(json.dumps(m) + "\n" for m in metrics) + '{"step": 3'
        )  # last line cut short
    return d


def read_csv(sweep):
    with (sweep / "report.csv").open() as f:
        return list(csv.DictReader(f))


def test_one_row_per_job_with_its_summary_figures(tmp_path):
    summaries = [
        summary("elman", 4, 2, acc=(1.0, 0.0), steps=(200, None)),
        summary("gru", 8, 2),
        summary("gru", 4, 8, acc=(1.0, 1.0), steps=(100, 500)),
    ]
    for i, s in enumerate(summaries):
        c = s["config"]
        make_job(
            tmp_path,
            i,
            s,
            [
                f"model.cell={c['model']['cell']}",
                f"task.bits={c['task']['bits']}",
                f"model.hidden={c['model']['hidden']}",
            ],
        )
    text = report.write_report(tmp_path)
    rows = read_csv(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    for row, s in zip(rows, summaries):
        c = s["config"]
        assert (row["cell"], int(row["bits"]), int(row["hidden"])) == (
            c["model"]["cell"],
            c["task"]["bits"],
            c["model"]["hidden"],
        )
        assert float(row["success_rate"]) == s["success_rate"]
        assert float(row["final_accuracy"]) == s["final_accuracy"]
        assert float(row["median_steps_to_solve"]) == np.median([x for x in s["steps_to_solve"] if x is not None])
        assert int(row["solved_seeds"]) == sum(x is not None for x in s["steps_to_solve"])
    assert "3 jobs" in text and "3 ok" in text
    md = (tmp_path / "report.md").read_text()
    assert (
        "| gru | 4 | 8 | 1 | 2 | 1 | 1 | 300 |" in md
    )  # cell, bits, hidden, jobs, seeds, success, accuracy, median steps
    for name in ("success.png", "steps.png", "generalization.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_failed_running_and_interrupted_jobs_are_named(tmp_path):
    make_job(tmp_path, 0, summary("lstm", 4, 4))
    crash = {
        "status": "failed",
        "error": "ConfigError: model.hidden=0 is not allowed; must be >= 1",
        "task": "addition",
        "config": config("lstm", 4, 0),
    }
    make_job(tmp_path, 1, crash, ["model.hidden=0"])
    nan = summary("lstm", 4, 8, acc=(0.0, 0.0), steps=(None, None), failed=(0, 1), status="failed") | {
        "error": "loss became NaN or Inf in every seed"
    }
    make_job(tmp_path, 2, nan)
    make_job(
        tmp_path,
        3,
        None,
        config={"task": {"bits": 8}, "model": {"cell": "gru", "hidden": 2}},
        metrics=[{"step": 1}, {"step": 2}],
    )
    make_job(tmp_path, 4, summary("gru", 8, 4) | {"status": "interrupted", "steps": 120})
    make_job(tmp_path, 10, summary("lstm", 8, 4, acc=(1.0, 0.0), steps=(100, None), failed=(1,)))
    text = report.write_report(tmp_path)
    assert "6 jobs" in text and "2 ok, 2 failed, 1 running or missing, 1 interrupted" in text
    lines = text.splitlines()
    assert any("job 1 " in l and "failed" in l and "model.hidden=0" in l for l in lines)
    assert any("job 2 " in l and "NaN or Inf" in l for l in lines)
    assert any("job 3 " in l and "running or missing" in l and "step 2" in l and "gru" in l for l in lines)
    assert any("job 4 " in l and "interrupted" in l for l in lines)
    assert any("job 10 " in l and "seeds [1]" in l and "NaN" in l for l in lines)
    rows = {r["job"]: r for r in read_csv(tmp_path)}
    assert list(rows) == ["0", "1", "2", "3", "4", "10"]  # numeric job order
    assert rows["1"]["status"] == "failed" and "model.hidden=0" in rows["1"]["error"]
    assert (
        rows["2"]["status"] == "failed" and rows["2"]["failed_seeds"] == "2" and float(rows["2"]["success_rate"]) == 0.0
    )
    assert rows["3"]["status"] == "running" and rows["3"]["cell"] == "gru" and rows["3"]["steps"] == "2"
    groups = {(g.cell, g.bits, g.hidden): g for g in report_jobs.group_jobs(report_jobs.load_jobs(tmp_path))}
    assert groups["lstm", 4, 8].seeds == 2 and groups["lstm", 4, 8].success_rate == 0.0  # NaN seeds count as not solved
    assert (
        groups["gru", 8, 4].seeds == 0 and groups["gru", 8, 4].generalization() == {}
    )  # the interrupted job is left out
    assert groups["lstm", 8, 4].failed_seeds == 1


def test_jobs_sharing_a_cell_are_pooled_and_the_report_says_over_what(tmp_path):
    make_job(tmp_path, 0, summary(acc=(1.0, 1.0), steps=(100, 200), lr=0.01), ["optim.lr=0.01"])
    make_job(tmp_path, 1, summary(acc=(1.0, 0.0, 0.0), steps=(400, None, None), lr=0.1), ["optim.lr=0.1"])
    text = report.write_report(tmp_path)
    (g,) = report_jobs.group_jobs(report_jobs.load_jobs(tmp_path))
    assert g.seeds == 5
    assert g.success_rate == pytest.approx(3 / 5)
    assert g.median_steps == 200.0
    assert g.generalization()[8] == pytest.approx(np.mean([0.5, 0.5, 0.5, 0.0, 0.0]))
    assert "pooled" in text and "across: optim.lr, task.seeds\n" in text + "\n"  # 2 and 3 seeds


def test_pooling_reads_the_summaries_configs_where_a_preset_changed_what_no_override_names(tmp_path):
    base = {
        "task": {"name": "addition", "bits": 4, "batch_size": 64},
        "model": {"cell": "lstm", "hidden": 4, "activation": "tanh"},
        "optim": {"name": "adam", "lr": 0.01},
    }
    preset = {**base, "model": {**base["model"], "activation": "sigmoid"}, "task": {**base["task"], "batch_size": 1}}
    make_job(tmp_path, 0, summary() | {"config": base}, [])
    make_job(tmp_path, 1, summary() | {"config": preset}, ["experiment=something"])
    text = report.write_report(tmp_path)
    assert "across: model.activation, task.batch_size\n" in text + "\n"


def charlm_summary(cell, hidden, best, final, unigram=4.4, steps=40, chars=1.5e5):
    return {
        "status": "ok",
        "task": "charlm",
        "steps": steps,
        "best_val_bpc": best,
        "final_val_bpc": final,
        "final_train_bpc": final + 0.1,
        "unigram_bpc": unigram,
        "chars_per_second": chars,
        "config": {"task": {"name": "charlm"}, "model": {"cell": cell, "hidden": hidden, "layers": 2}},
    }


def charlm_metrics(bpcs, every=2):
    """Training bpc at every logged step, validation bpc at every `every`-th, as the driver logs them."""
    return [
        {"step": 10 * (i + 1), "train_bpc": b + 0.5, **({"val_bpc": b} if (i + 1) % every == 0 else {})}
        for i, b in enumerate(bpcs)
    ]


def test_charlm_jobs_get_a_table_and_a_bpc_curve_of_their_metrics(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    lines = []
    plot = Axes.plot
    monkeypatch.setattr(
        Axes, "plot", lambda ax, x, y, **k: lines.append((list(x), list(y), k.get("ls"))) or plot(ax, x, y, **k)
    )
    summaries = [charlm_summary("lstm", 8, 3.0, 3.25), charlm_summary("gru", 16, 2.5, 2.5, chars=2e5)]
    metrics = [charlm_metrics([4.0, 3.5, 3.0, 3.25]), charlm_metrics([3.75, 2.5])]
    for i, (s, m) in enumerate(zip(summaries, metrics)):
        make_job(tmp_path, i, s, overrides=[f"model.hidden={s['config']['model']['hidden']}"], metrics=m)
    make_job(tmp_path, 2, {**summary(), "generalization_per_seed": {}})  # an addition job beside them: both reports
    running = charlm_metrics([4.5, 4.25], every=3)  # no validation yet: its training curve only
    make_job(tmp_path, 3, None, config=summaries[0]["config"], metrics=running)
    text = report.write_report(tmp_path)
    assert text.startswith("1 jobs in") and "3 charlm jobs in" in text and "2 ok, 0 failed, 1 running" in text
    assert [r["job"] for r in read_csv(tmp_path)] == ["2"]
    with (tmp_path / "charlm_report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "ok"), ("3", "running")]
    assert int(rows[2]["steps"]) == running[-1]["step"] and rows[2]["best_val_bpc"] == ""
    for row, s in zip(rows, summaries):
        model = s["config"]["model"]
        assert (row["cell"], int(row["hidden"]), int(row["layers"])) == (model["cell"], model["hidden"], 2)
        assert row["overrides"] == f"model.hidden={model['hidden']}" and int(row["steps"]) == s["steps"]
        for key in ("best_val_bpc", "final_val_bpc", "unigram_bpc", "chars_per_second"):
            assert float(row[key]) == s[key]
    assert (tmp_path / "val_bpc.png").stat().st_size > 0 and "val_bpc.png" in (
        tmp_path / "charlm_report.md"
    ).read_text()
    expected = []
    for m in metrics:
        val = [r for r in m if "val_bpc" in r]
        expected += [([r["step"] for r in val], [r["val_bpc"] for r in val], None)]
        expected += [([r["step"] for r in m], [r["train_bpc"] for r in m], "--")]
    expected += [([r["step"] for r in running], [r["train_bpc"] for r in running], "--")]
    assert lines == expected


def test_a_single_charlm_run_directory_is_reported(tmp_path):
    run = make_job(tmp_path, "run", charlm_summary("lstm", 8, 3.0, 3.25), metrics=charlm_metrics([4.0, 3.0]))
    (run / "checkpoints").mkdir()  # a run's own sub-directories are no jobs
    text = report.write_report(run)
    assert text.startswith("1 charlm jobs in") and "| run | ok | lstm | 8 | 2 | 40 | 3 | 3.25 | 4.4 |" in text
    assert (run / "val_bpc.png").is_file() and not (run / "report.md").exists()


def test_jobs_of_another_task_are_left_out_and_named(tmp_path):
    make_job(tmp_path, 0, summary())
    make_job(tmp_path, 1, {"status": "ok", "task": "copy", "config": {"task": {"name": "copy"}}})
    make_job(tmp_path, 2, None, config={"task": {"name": "copy"}, "model": {"cell": "gru", "hidden": 8}})
    text = report.write_report(tmp_path)
    assert text.startswith("1 jobs in") and "1 ok, 0 failed, 0 running" in text
    assert "2 copy jobs left out (1, 2): this report covers binary addition" in text
    assert [r["job"] for r in read_csv(tmp_path)] == ["0"]


def test_median_steps_ignores_unsolved_seeds():
    assert report_jobs.median_solved([100, None, 300, 200]) == 200.0
    assert math.isnan(report_jobs.median_solved([None, None]))


def test_bad_input_is_one_line_without_traceback(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    out = subprocess.run(
        [sys.executable, "-m", "rnn_jax.report", str(tmp_path / "missing")], capture_output=True, text=True
    )  # the real command
    assert (
        out.returncode == 2
        and out.stderr.count("\n") == 1
        and out.stderr.startswith("error: ")
        and "Traceback" not in out.stderr
    )
    for path in (tmp_path / "file.txt", tmp_path / "empty"):
        assert report.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err


def test_jobs_the_sweep_has_not_started_are_counted(tmp_path):
    multirun = {
        "hydra": {
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "params": {"task.bits": "4,8"},
            },
            "overrides": {"task": ["model.hidden=2,4,8", "model=lstm"]},
        }
    }
    (tmp_path / "multirun.yaml").write_text(json.dumps(multirun))  # JSON is YAML
    assert report_jobs.grid_size(tmp_path) == 6
    make_job(tmp_path, 0, summary("lstm", 4, 2))
    make_job(tmp_path, 1, None, config={"task": {"bits": 4}, "model": {"cell": "lstm", "hidden": 4}})
    text = report.write_report(tmp_path)
    assert text.splitlines()[0].endswith("1 ok, 0 failed, 1 running or missing; 4 of the sweep's 6 jobs not started")
    multirun["hydra"]["sweeper"] = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}
    (tmp_path / "multirun.yaml").write_text(json.dumps(multirun))
    assert report_jobs.grid_size(tmp_path) is None  # another sweeper: its count is its own


def test_steps_heatmap_panels_share_one_colour_scale(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    scales = []
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda fig, *a, **k: scales.extend(im.get_clim() for ax in fig.axes for im in ax.get_images()),
    )
    make_job(tmp_path, 0, summary("elman", 4, 2, acc=(1.0, 1.0), steps=(100, 200)))
    make_job(tmp_path, 1, summary("lstm", 4, 2, acc=(1.0, 1.0), steps=(700, 900)))
    groups = report_jobs.group_jobs(report_jobs.load_jobs(tmp_path))
    report_plots.heatmap(tmp_path / "steps.png", groups, lambda g: g.median_steps, "median steps", "magma_r")
    assert scales == [(150.0, 800.0), (150.0, 800.0)]


def test_a_sweep_that_ran_no_job_lists_the_jobs_it_planned(tmp_path):
    multirun = {
        "hydra": {
            "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
            "overrides": {"task": ["model.hidden=1,abc", "model=lstm"]},
        }
    }
    (tmp_path / "multirun.yaml").write_text(json.dumps(multirun))  # JSON is YAML
    with pytest.raises(
        report_jobs.ReportError,
        match=r"ran no job .*multirun\.yaml planned 2: 0: model\.hidden=1 model=lstm; 1: model\.hidden=abc model=lstm",
    ):
        report_jobs.load_jobs(tmp_path)
