"""The jobs of a sweep as the report reads them: each job directory's summary, overrides and config
(`Job`), the jobs of one (cell, bits, hidden) pooled (`Group`), and the grid Hydra planned."""

from __future__ import annotations

import json
import math
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
                f"{sweep_dir} ran no job (did the sweep stop at start? see its log); "
                f"multirun.yaml planned {len(planned)}: {listed}"
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
