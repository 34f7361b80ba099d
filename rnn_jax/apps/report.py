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
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

GROUP_KEYS = ("cell", "bits", "hidden")
SETTINGS = {  # the report's names for config settings
    "cell": "model.cell", "bits": "task.bits", "hidden": "model.hidden", "layers": "model.layers",
    "optimizer": "optim.name", "lr": "optim.lr", "seeds": "task.seeds",
}  # fmt: skip
# Overrides that place a job in its (cell, bits, hidden) group rather than distinguish it within one.
GROUP_OVERRIDES = ("model", "model.cell", "task.bits", "model.hidden")
SAME_AS = {"optim.name": "optim", "backend.name": "backend"}  # overrides that name the same thing
CSV_FIELDS = (
    "job", "status", "cell", "bits", "hidden", "layers", "optimizer", "lr", "backend", "seeds", "steps",
    "success_rate", "final_accuracy", "median_steps_to_solve", "solved_seeds", "failed_seeds",
    "compile_seconds", "train_seconds", "us_per_step", "generalization", "overrides", "error",
)  # fmt: skip


class ReportError(ValueError):
    """Bad input (not a directory, no jobs); printed as one line."""


@dataclass
class Job:
    """One job directory: its summary (None while it runs), overrides and composed config."""

    name: str
    path: Path
    summary: Optional[dict]
    overrides: list[str]
    config: dict
    last_step: Optional[int] = None  # from metrics.jsonl, for a job without a summary

    @property
    def status(self) -> str:
        if self.summary is None:
            return "running"
        return self.summary.get("status", "ok")

    @property
    def settings(self) -> dict:
        """The job's config: the one its summary carries, else the one Hydra composed (a job that
        is running, or failed before it had a summary)."""
        return (self.summary or {}).get("config") or self.config

    def get(self, key: str) -> Any:
        """The setting `key` names in `SETTINGS` (e.g. "cell": model.cell)."""
        section, name = SETTINGS[key].split(".")
        return (self.settings.get(section) or {}).get(name)

    @property
    def group(self) -> tuple:
        return tuple(self.get(k) for k in GROUP_KEYS)

    @property
    def verification(self) -> Optional[dict]:
        """The job's `verification.json` (`python -m rnn_jax.verify`), None when absent."""
        try:
            return json.loads((self.path / "verification.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @property
    def task(self) -> Optional[str]:
        """ "addition", "charlm", or None when neither the summary nor the config says."""
        return (self.summary or {}).get("task") or (self.settings.get("task") or {}).get("name")


@dataclass
class Group:
    """The jobs of one (cell, bits, hidden), their seeds pooled."""

    cell: str
    bits: int
    hidden: int
    jobs: list[Job] = field(default_factory=list)

    def finished(self) -> list[Job]:
        """Finished jobs only: an interrupted job's seeds stopped early and would bias the pool;
        a failed job's seeds count (a seed whose loss went NaN has accuracy 0)."""
        return [j for j in self.jobs if j.status in ("ok", "failed") and j.summary]

    def _seed_lists(self, key):
        return [x for j in self.finished() if isinstance(j.summary.get(key), list) for x in j.summary[key]]

    @property
    def seeds(self) -> int:
        return len(self._seed_lists("per_seed_accuracy"))

    @property
    def success_rate(self) -> float:
        acc = self._seed_lists("per_seed_accuracy")
        return float(np.mean(np.asarray(acc) == 1.0)) if acc else math.nan

    @property
    def final_accuracy(self) -> float:
        acc = self._seed_lists("per_seed_accuracy")
        return float(np.mean(acc)) if acc else math.nan

    @property
    def median_steps(self) -> float:
        return median_solved(self._seed_lists("steps_to_solve"))

    @property
    def proved(self) -> float:
        """Fraction of the verified seeds proved correct at every length; NaN when none verified."""
        verdicts = [r["verdict"] for j in self.finished() for r in (j.verification or {}).get("seeds", [])]
        return float(np.mean([v == "proved" for v in verdicts])) if verdicts else math.nan

    @property
    def failed_seeds(self) -> int:
        return len(self._seed_lists("failed_seeds"))

    def generalization(self) -> dict[int, float]:
        """Mean accuracy per test width over all seeds of the group (failed seeds count as 0)."""
        per_width: dict[int, list] = {}
        for j in self.finished():
            for n, accs in (j.summary.get("generalization_per_seed") or {}).items():
                per_width.setdefault(int(n), []).extend(accs)
        return {n: float(np.mean(a)) for n, a in sorted(per_width.items()) if a}


def median_solved(steps_to_solve) -> float:
    """Median steps to solve over the seeds that solved; NaN when none did."""
    solved = [s for s in steps_to_solve or [] if s is not None]
    return float(np.median(solved)) if solved else math.nan


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        return None


def _last_step(path: Path) -> Optional[int]:
    step = None
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                step = json.loads(line).get("step", step)
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut short while the job writes it
    return step


def _job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [
        d
        for d in sweep_dir.iterdir()
        if d.is_dir() and not d.name.startswith(".") and ((d / ".hydra").is_dir() or (d / "summary.json").is_file())
    ]
    return sorted(dirs, key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))


def planned_jobs(sweep_dir: Path) -> Optional[list[list[str]]]:
    """The overrides of every job the sweep launches, from Hydra's `multirun.yaml` as its basic
    sweeper splits them (its `params` and the command line's swept values); None for another
    sweeper or no file."""
    cfg = _read_yaml(Path(sweep_dir) / "multirun.yaml") or {}
    hydra_cfg = cfg.get("hydra") or {}
    sweeper = hydra_cfg.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        arguments += list((hydra_cfg.get("overrides") or {}).get("task") or [])
        (batches,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
        return [list(b) for b in batches]
    except Exception:  # noqa: BLE001 - a grid it cannot read is reported without its jobs
        return None


def grid_size(sweep_dir: Path) -> Optional[int]:
    """How many jobs the sweep launches (see `planned_jobs`); None when unknown."""
    planned = planned_jobs(sweep_dir)
    return None if planned is None else len(planned)


def load_jobs(sweep_dir) -> list[Job]:
    """Every job of `sweep_dir` (its numbered sub-directories), in job order.

    Raises `ReportError` when `sweep_dir` is not a directory or holds no job.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a directory")
    dirs = _job_dirs(sweep_dir)
    if not dirs and (sweep_dir / "summary.json").is_file():
        dirs = [sweep_dir]  # a single run's directory
    if not dirs:
        planned = planned_jobs(sweep_dir)
        if planned:
            listed = "; ".join(f"{i}: {' '.join(job)}" for i, job in enumerate(planned[:20])) + (
                "; ..." if len(planned) > 20 else ""
            )
            raise ReportError(
                f"{sweep_dir} ran no job (did the sweep stop at start? see its log); multirun.yaml planned {len(planned)}: {listed}"
            )
        raise ReportError(f"{sweep_dir} holds no jobs (no sub-directory with .hydra/ or summary.json)")
    jobs = []
    for d in dirs:
        summary = None
        if (d / "summary.json").is_file():
            try:
                summary = json.loads((d / "summary.json").read_text())
            except json.JSONDecodeError as e:
                summary = {"status": "failed", "error": f"summary.json unreadable: {e}"}
        job = Job(
            d.name,
            d,
            summary,
            _read_yaml(d / ".hydra" / "overrides.yaml") or [],
            _read_yaml(d / ".hydra" / "config.yaml") or {},
        )
        if summary is None:
            job.last_step = _last_step(d / "metrics.jsonl")
        jobs.append(job)
    return jobs


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


def group_jobs(jobs: list[Job]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for job in jobs:
        if None in job.group:
            continue
        groups.setdefault(job.group, Group(*job.group)).jobs.append(job)
    return sorted(groups.values(), key=lambda g: (str(g.cell), g.bits, g.hidden))


def pooled_over(groups: list[Group]) -> list[str]:
    """The overrides (and summary keys) that differ between jobs of one group: what was pooled."""
    keys = set()
    for g in groups:
        if len(g.jobs) < 2:
            continue
        seen: dict[str, set] = {}
        for j in g.jobs:
            # The composed config: a preset changes keys no override names.
            if j.settings:
                pairs = _flatten(j.settings)
            else:
                pairs = dict(o.lstrip("+~").split("=", 1) for o in j.overrides if "=" in o)
            pairs = {SAME_AS.get(k, k): v for k, v in pairs.items()}
            # What the summaries say, for what an override did not name (a preset, a default).
            pairs.update(
                {
                    k: str(v)
                    for k, v in (
                        ("backend", (j.summary or {}).get("backend")),
                        ("optim.lr", j.get("lr")),
                        ("model.layers", j.get("layers")),
                        ("optim", j.get("optimizer")),
                    )
                }
            )
            for k, v in pairs.items():
                if k not in GROUP_OVERRIDES:
                    seen.setdefault(k, set()).add(v)
        keys |= {k for k, vs in seen.items() if len(vs) > 1}
    return sorted(keys)


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` as `{"a.b": "1"}`; lists as their JSON text."""
    flat = {}
    for k, v in config.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else str(v)
    return flat


# --- writing ------------------------------------------------------------------------------


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 1e6 else f"{x:.{digits}g}"
    return str(x)


def _md_table(header: list[str], rows: list[list]) -> str:
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


def _grid(groups: list[Group], cell: str, value) -> tuple[list, list, np.ndarray]:
    bits = sorted({g.bits for g in groups})
    hidden = sorted({g.hidden for g in groups})
    grid = np.full((len(hidden), len(bits)), np.nan)
    for g in groups:
        if g.cell == cell:
            grid[hidden.index(g.hidden), bits.index(g.bits)] = value(g)
    return bits, hidden, grid


def heatmap(path: Path, groups: list[Group], value, title: str, cmap: str, vmin=None, vmax=None, fmt="{:.2f}") -> None:
    """One panel per cell: `value(group)` over bits (columns) x hidden (rows); blank where none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({g.cell for g in groups})
    if vmin is None or vmax is None:  # one colour scale for every panel, under the one colorbar
        values = np.array([value(g) for g in groups], dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            vmin = values.min() if vmin is None else vmin
            vmax = values.max() if vmax is None else vmax
    # At least 6 inches wide, so that the title of a one-cell, 2 x 2 sweep is not cut off.
    fig, axes = plt.subplots(
        1, len(cells), figsize=(max(6.0, 1.2 + 2.6 * len(cells)), 3.2), squeeze=False, constrained_layout=True
    )
    image = None
    for ax, cell in zip(axes[0], cells):
        bits, hidden, grid = _grid(groups, cell, value)
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_facecolor("0.85")
        ax.set_xticks(range(len(bits)), [str(b) for b in bits])
        ax.set_yticks(range(len(hidden)), [str(h) for h in hidden])
        ax.set_xlabel("bits")
        ax.set_title(cell)
        for (r, c), v in np.ndenumerate(grid):
            if not np.isnan(v):
                red, green, blue, _ = image.cmap(image.norm(v))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7, color="w" if dark else "k")
    axes[0][0].set_ylabel("hidden units")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def generalization_plot(path: Path, groups: list[Group]) -> None:
    """Accuracy against test width: the training width (final accuracy) then each generalisation
    width; one panel per (training bits, cell), one line per hidden size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({g.cell for g in groups})
    bits = sorted({g.bits for g in groups})
    hidden = sorted({g.hidden for g in groups})
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(hidden)))
    fig, axes = plt.subplots(
        len(bits),
        len(cells),
        figsize=(2.8 * len(cells), 2.0 * len(bits) + 0.6),
        squeeze=False,
        sharex=True,
        sharey=True,
        constrained_layout=True,
    )
    for g in groups:
        ax = axes[bits.index(g.bits)][cells.index(g.cell)]
        curve = {g.bits: g.final_accuracy, **g.generalization()}
        xs = sorted(curve)
        ax.plot(
            xs, [curve[x] for x in xs], marker="o", ms=3, color=colors[hidden.index(g.hidden)], label=f"h={g.hidden}"
        )
    for r, b in enumerate(bits):
        for c, cell in enumerate(cells):
            ax = axes[r][c]
            ax.set_xscale("log", base=2)
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{cell}, trained on {b} bits", fontsize=8)
            ax.grid(alpha=0.3)
        axes[r][0].set_ylabel("exact accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("test bits")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.savefig(path, dpi=80)
    plt.close(fig)


FIGURES = {
    "success.png": "success rate over bits x hidden, one panel per cell",
    "proved.png": "fraction of seeds proved correct at every length",
    "steps.png": "median steps to solve (seeds that solved)",
    "generalization.png": "accuracy vs test bit width",
}


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
        f"{len(jobs)} jobs in {sweep_dir}: {counts['ok']} ok, {counts['failed']} failed, {counts['running']} running or missing"
        + (f", {counts['other']} interrupted" if counts["other"] else "")
        + (f"; {not_started} of the sweep's {grid} jobs not started" if not_started > 0 else ""),
    ]
    if left_out:
        tasks = sorted({str(j.task) for j in left_out})
        lines.append(
            f"{len(left_out)} {'/'.join(tasks)} jobs left out ({', '.join(j.name for j in left_out)}): this report covers binary addition"
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
        + ([_md_table(header, rows)] if rows else ["(no job with results yet)"])
        + ([""] + notes if notes else [])
    )

    md = [f"# Sweep report: {sweep_dir.name}", "", *lines, ""]
    md += ["success: fraction of seeds exact on every evaluated pair; accuracy: mean exact accuracy over seeds; "
           "median steps: over the seeds that solved; NaN seeds: seeds whose loss became NaN or Inf (not solved); "
           "acc@n: exact accuracy on n-bit numbers; proved: fraction of seeds proved correct at every length "
           "(`python -m rnn_jax.verify`).", ""]  # fmt: skip
    if notes:
        md += ["## Failed, incomplete or running", "", *[f"- {n}" for n in notes], ""]
    md += ["## By cell, bits and hidden", "", _md_table(header, rows) if rows else "(no job with results yet)", ""]
    md += ["## Figures", "", *[f"![{FIGURES[f]}]({f})" for f in figures], ""] if figures else []
    md += ["## Jobs", "", _md_table(
        ["job", "status", "cell", "bits", "hidden", "success", "median steps", "NaN seeds", "compile s", "train s", "overrides"],
        [[r["job"], r["status"], r["cell"], r["bits"], r["hidden"], r["success_rate"], r["median_steps_to_solve"], r["failed_seeds"],
          r["compile_seconds"], r["train_seconds"], r["overrides"]] for r in map(job_row, jobs)],
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
