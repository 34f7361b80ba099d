"""The report of an addition sweep: `python -m rnn_jax.report <sweep dir>`.

Reads every job of a Hydra multirun (`<sweep dir>/<job>/summary.json`, and the job's
`.hydra/overrides.yaml` and `.hydra/config.yaml`) and writes into the sweep directory:

- `report.csv`: one row per job, its figures as its summary gives them;
- `report.md`: the jobs that failed and why, the jobs still running or missing, one table row per
  (cell, bits, hidden) and the per-job table;
- `success.png`: success rate (fraction of seeds exact on every evaluated pair) over bits x hidden,
  one panel per cell; `steps.png`: the median steps to solve over the seeds that solved;
  `generalization.png`: mean accuracy against test bit width, one panel per (training bits, cell);
- with `python -m rnn_jax.verify` run on the sweep first (each job's `verification.json`): the
  fraction of seeds proved correct at every length per group, `proved.png`, and the smallest
  proved network.

It works on a sweep that is still running: a job without `summary.json` is listed as running or
missing. Jobs that share (cell, bits, hidden) but differ in anything else (the backend, the
learning rate, ...) are pooled: their seeds count together, and the report names what differed.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional

from rnn_jax.apps.report_jobs import Job, ReportError, grid_size, group_jobs, load_jobs, pooled_over
from rnn_jax.apps.report_plots import FIGURES, generalization_plot, heatmap
from rnn_jax.apps.report_tables import group_table, job_row, md_table, problems, smallest_proved, write_csv


def write_report(sweep_dir, jobs: Optional[list[Job]] = None) -> str:
    """Writes report.md, report.csv and the figures into `sweep_dir`; returns the text to print."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir) if jobs is None else jobs
    charlm = [j for j in jobs if j.task == "charlm"]  # their own section: rnn_jax.apps.report_charlm
    if charlm:
        from rnn_jax.apps.report_charlm import write_charlm_report

        charlm_text = write_charlm_report(sweep_dir, charlm)
        jobs = [j for j in jobs if j.task != "charlm"]
        if not jobs:
            return charlm_text
    left_out = [j for j in jobs if j.task not in (None, "addition")]
    jobs = [j for j in jobs if j not in left_out]
    groups = group_jobs(jobs)
    reported = [g for g in groups if g.seeds]  # groups with per-seed results to show
    counts = {s: sum(j.status == s for j in jobs) for s in ("ok", "failed", "running")}
    counts["other"] = len(jobs) - sum(counts.values())
    header, rows = group_table(reported)
    notes = problems(jobs)
    pooled = pooled_over(groups)

    write_csv(sweep_dir / "report.csv", jobs)
    figures = []
    if reported:
        heatmap(
            sweep_dir / "success.png",
            reported,
            lambda g: g.success_rate,
            "success rate (fraction of seeds exact on every evaluated pair)",
            "viridis",
            0.0,
            1.0,
        )
        steps = [g for g in reported if not math.isnan(g.median_steps)]
        if steps:
            heatmap(
                sweep_dir / "steps.png",
                reported,
                lambda g: g.median_steps,
                "median steps to solve (over the seeds that solved; gray: none did)",
                "magma_r",
                fmt="{:.0f}",
            )
        else:
            notes.append("steps.png is not written: no seed solved in any job")
        if any(g.generalization() for g in reported):
            generalization_plot(sweep_dir / "generalization.png", reported)
        if any(not math.isnan(g.proved) for g in reported):
            title = "fraction of seeds proved correct at every length (python -m rnn_jax.verify)"
            heatmap(sweep_dir / "proved.png", reported, lambda g: g.proved, title, "viridis", 0.0, 1.0)
        figures = [name for name in FIGURES if (sweep_dir / name).is_file()]

    grid = grid_size(sweep_dir)
    not_started = grid - len(jobs) - len(left_out) if grid is not None else 0
    lines = [
        f"{len(jobs)} jobs in {sweep_dir}: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['running']} running or missing"
        + (f", {counts['other']} interrupted" if counts["other"] else "")
        + (f"; {not_started} of the sweep's {grid} jobs not started" if not_started > 0 else ""),
    ]
    if left_out:
        tasks = sorted({str(j.task) for j in left_out})
        lines.append(
            f"{len(left_out)} {'/'.join(tasks)} jobs left out ({', '.join(j.name for j in left_out)}): "
            "this report covers binary addition"
        )
    smallest = smallest_proved(jobs)
    if smallest:
        lines.append(smallest)
    if pooled:
        lines.append(
            f"jobs sharing (cell, bits, hidden) are pooled (their seeds count together) across: {', '.join(pooled)}"
        )
    text = "\n".join(
        lines
        + [""]
        + ([md_table(header, rows)] if rows else ["(no job with results yet)"])
        + ([""] + notes if notes else [])
    )

    md = [f"# Sweep report: {sweep_dir.name}", "", *lines, ""]
    md += ["success: fraction of seeds exact on every evaluated pair; accuracy: mean exact accuracy over seeds; "
           "median steps: over the seeds that solved; NaN seeds: seeds whose loss became NaN or Inf (not solved); "
           "acc@n: exact accuracy on n-bit numbers; proved: fraction of seeds proved correct at every length "
           "(`python -m rnn_jax.verify`).", ""]  # fmt: skip
    if notes:
        md += ["## Failed, incomplete or running", "", *[f"- {n}" for n in notes], ""]
    md += ["## By cell, bits and hidden", "", md_table(header, rows) if rows else "(no job with results yet)", ""]
    md += ["## Figures", "", *[f"![{FIGURES[f]}]({f})" for f in figures], ""] if figures else []
    md += ["## Jobs", "", md_table(
        ["job", "status", "cell", "bits", "hidden", "success", "median steps", "NaN seeds", "compile s", "train s",
         "overrides"],
        [[r["job"], r["status"], r["cell"], r["bits"], r["hidden"], r["success_rate"], r["median_steps_to_solve"],
          r["failed_seeds"], r["compile_seconds"], r["train_seconds"], r["overrides"]] for r in map(job_row, jobs)],
    ), ""]  # fmt: skip
    (sweep_dir / "report.md").write_text("\n".join(md))
    text += f"\n\nwrote report.md, report.csv{''.join(', ' + f for f in figures)} in {sweep_dir}"
    return text + (f"\n\n{charlm_text}" if charlm else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rnn_jax.report",
        description="Report of an addition or char-LM sweep (Hydra multirun directory) or run.",
    )
    parser.add_argument("sweep_dir", help="the sweep directory, e.g. experiments/multirun/<date>/<time>")
    args = parser.parse_args(argv)
    try:
        print(write_report(args.sweep_dir))
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full sweep directory
        print(f"error: {e.filename or args.sweep_dir}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
