"""The char-LM part of `python -m rnn_jax.report`: a table and a bpc curve per character-LM job.

`rnn_jax.apps.report` hands it the jobs whose task is `charlm` (a sweep's or a single run's) and
it writes beside the addition report:

- `charlm_report.csv` and `charlm_report.md`: one row per job, its overrides, cell, hidden,
  layers, status, steps, best and final validation bpc, unigram bpc and chars per second, as its
  `summary.json` gives them (a running job: its last logged step);
- `val_bpc.png`: validation bpc against step for each job (solid) and its training bpc (dashed,
  same colour), from the records of its `metrics.jsonl`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rnn_jax.apps.report_jobs import Job
from rnn_jax.apps.report_tables import md_table

FIGURES = ("best_val_bpc", "final_val_bpc", "final_train_bpc", "unigram_bpc", "chars_per_second")  # from the summary
CSV_FIELDS = ("job", "status", "cell", "hidden", "layers", "steps", *FIGURES, "overrides", "error")
TABLE = {  # the markdown table's columns: its heading for each row key
    "job": "job", "status": "status", "cell": "cell", "hidden": "hidden", "layers": "layers", "steps": "steps",
    "best_val_bpc": "best val bpc", "final_val_bpc": "final val bpc", "unigram_bpc": "unigram bpc",
    "chars_per_second": "chars/s", "overrides": "overrides",
}  # fmt: skip
FIGURE = "val_bpc.png"


def charlm_row(job: Job) -> dict[str, Any]:
    """The row of one char-LM job: its summary's figures, nothing recomputed."""
    s = job.summary or {}
    return {
        "job": job.name,
        "status": job.status,
        **{k: job.get(k) for k in ("cell", "hidden", "layers")},
        "steps": s.get("steps", job.last_step),
        **{k: s.get(k) for k in FIGURES},
        "overrides": " ".join(job.overrides),
        "error": s.get("error", ""),
    }


def read_records(path: Path) -> list[dict]:
    """The JSON records of a `metrics.jsonl`; a line cut short (the job is writing it) is skipped."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "step" in record:
                records.append(record)
    return records


def curve(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records that carry `key` (e.g. `val_bpc`: the evaluated steps only)."""
    pairs = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def bpc_plot(path: Path, jobs: list[Job]) -> bool:
    """Validation bpc (solid, markers) and training bpc (dashed) against step, one colour per job.
    Returns False (and writes nothing) when no job logged a bpc."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(j, read_records(j.path / "metrics.jsonl")) for j in jobs]
    curves = [(j, curve(r, "val_bpc"), curve(r, "train_bpc")) for j, r in curves]
    curves = [c for c in curves if c[1][0] or c[2][0]]
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    colors = plt.get_cmap("tab10")
    for i, (job, (val_x, val_y), (train_x, train_y)) in enumerate(curves):
        label = f"{job.name}: {job.get('cell')}, h={job.get('hidden')}"
        if val_x:
            ax.plot(val_x, val_y, marker="o", ms=3, color=colors(i % 10), label=label)
        if train_x:
            ax.plot(train_x, train_y, ls="--", lw=1, color=colors(i % 10), label=None if val_x else f"{label} (train)")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.set_title("validation bpc (solid) and training bpc (dashed)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def write_charlm_report(out_dir, jobs: list[Job]) -> str:
    """Writes charlm_report.md, charlm_report.csv and val_bpc.png into `out_dir`; returns the text to print."""
    out_dir = Path(out_dir)
    rows = [charlm_row(j) for j in jobs]
    with (out_dir / "charlm_report.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    plotted = bpc_plot(out_dir / FIGURE, jobs)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "running")}
    table = md_table(list(TABLE.values()), [[r[k] for k in TABLE] for r in rows])
    first = (
        f"{len(jobs)} charlm jobs in {out_dir}: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['running']} running or missing"
    )
    errors = [f"job {r['job']}: {r['status']}: {r['error']}" for r in rows if r["error"]]
    md = [f"# Char-LM report: {out_dir.name}", "", first, ""]
    md += ["bpc: bits per character; best/final val bpc: the lowest and the last validation bpc; unigram bpc: "
           "the bpc of the training text's character frequencies, the bar a model must beat.", ""]  # fmt: skip
    md += ["## Failed", "", *[f"- {e}" for e in errors], ""] if errors else []
    md += ["## Jobs", "", table, ""]
    md += ["## Figures", "", f"![validation and training bpc against step]({FIGURE})", ""] if plotted else []
    (out_dir / "charlm_report.md").write_text("\n".join(md))
    written = "charlm_report.md, charlm_report.csv" + (f", {FIGURE}" if plotted else "")
    return "\n".join([first, "", table, *errors, "", f"wrote {written} in {out_dir}"])
