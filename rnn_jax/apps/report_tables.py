"""The report's text: a job's CSV row (`report.csv`), the table per (cell, bits, hidden), the
smallest proved network, and one line per job that failed or is still running."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Optional

from rnn_jax.apps.report_jobs import GROUP_KEYS, Group, Job, median_solved

CSV_FIELDS = (
    "job", "status", "cell", "bits", "hidden", "layers", "optimizer", "lr", "backend", "seeds", "steps",
    "success_rate", "final_accuracy", "median_steps_to_solve", "solved_seeds", "failed_seeds",
    "compile_seconds", "train_seconds", "us_per_step", "generalization", "overrides", "error",
)  # fmt: skip


def job_row(job: Job) -> dict[str, Any]:
    """The CSV row of one job: its summary's figures, nothing recomputed but the median."""
    s = job.summary or {}
    failed = s.get("failed_seeds")
    return {
        "job": job.name,
        "status": job.status,
        **{k: job.get(k) for k in ("cell", "bits", "hidden", "layers", "optimizer", "lr")},
        "backend": s.get("backend"),
        "seeds": job.get("seeds"),
        "steps": s.get("steps", job.last_step),
        "success_rate": s.get("success_rate"),
        "final_accuracy": s.get("final_accuracy"),
        "median_steps_to_solve": median_solved(s.get("steps_to_solve")) if "steps_to_solve" in s else None,
        "solved_seeds": sum(x is not None for x in s["steps_to_solve"]) if "steps_to_solve" in s else None,
        "failed_seeds": len(failed) if failed is not None else None,
        "compile_seconds": s.get("compile_seconds"),
        "train_seconds": s.get("train_seconds"),
        "us_per_step": s.get("us_per_step"),
        "generalization": " ".join(f"{n}:{a:g}" for n, a in (s.get("generalization") or {}).items()),
        "overrides": " ".join(job.overrides),
        "error": s.get("error", ""),
    }


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 1e6 else f"{x:.{digits}g}"
    return str(x)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def group_table(groups: list[Group]) -> tuple[list[str], list[list]]:
    widths = sorted({n for g in groups for n in g.generalization()})
    header = ["cell", "bits", "hidden", "jobs", "seeds", "success", "accuracy", "median steps", "NaN seeds"] + [
        f"acc@{n}" for n in widths
    ]
    verified = any(not math.isnan(g.proved) for g in groups)
    header += ["proved"] if verified else []
    rows = []
    for g in groups:
        gen = g.generalization()
        row = [g.cell, g.bits, g.hidden, len(g.jobs), g.seeds, g.success_rate, g.final_accuracy, g.median_steps]
        rows.append(row + [g.failed_seeds] + [gen.get(n) for n in widths] + ([g.proved] if verified else []))
    return header, rows


def smallest_proved(jobs: list[Job]) -> Optional[str]:
    """The proved network with the fewest parameters, as a line of the report; None if none."""
    seeds = [(j, r) for j in jobs for r in (j.verification or {}).get("seeds", []) if r["verdict"] == "proved"]
    if not seeds:
        return None
    params, hidden, cell, job, seed = min(
        (r["parameters"], j.get("hidden"), j.get("cell"), j.name, r["seed"]) for j, r in seeds
    )
    network = f"{cell}, {hidden} hidden units, {params} parameters"
    return f"smallest network proved correct at every length: {network} (job {job}, seed {seed})"


def problems(jobs: list[Job]) -> list[str]:
    """One line per job that failed, lost seeds to NaN/Inf loss, or has no summary yet."""
    lines = []
    for j in jobs:
        what = f"job {j.name} ({', '.join(f'{k}={v}' for k, v in zip(GROUP_KEYS, j.group))})"
        if j.status == "running":
            step = f"last logged step {j.last_step}" if j.last_step is not None else "nothing logged"
            lines.append(f"{what}: running or missing (no summary.json; {step})")
        elif j.status == "failed":
            lines.append(f"{what}: failed: {j.summary.get('error', 'no error recorded')}")
        elif j.status != "ok":  # interrupted: it stopped early, its seeds are left out of the tables
            lines.append(f"{what}: {j.status} at step {j.summary.get('steps')} (left out of the tables)")
        elif j.summary.get("failed_seeds"):
            lines.append(f"{what}: seeds {j.summary['failed_seeds']} hit NaN/Inf loss (counted as not solved)")
    return lines


def write_csv(path: Path, jobs: list[Job]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for job in jobs:
            w.writerow({k: "" if v is None else v for k, v in job_row(job).items()})
