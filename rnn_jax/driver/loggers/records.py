"""What every tracker is given: the config as hyperparameters, a log record's numbers at its step, the
summary split into results, throughput and bookkeeping, and the few facts about a run directory
(a sample's step, the run's status, whether it resumes) the trackers need."""

from __future__ import annotations

import contextlib
import json
import numbers
import re
from pathlib import Path
from typing import Any, NamedTuple, Optional

from rnn_jax.driver.loggers.naming import metric_name


def flatten(tree: Any, sep: str, lists: bool = True, prefix: str = "") -> dict[str, Any]:
    """The leaves of nested dicts (and lists, by index, when `lists`) under joined keys:
    `flatten({"per_seed": {"loss": [1, 2]}}, "/") == {"per_seed/loss/0": 1, "per_seed/loss/1": 2}`."""
    if isinstance(tree, dict):
        items = ((str(k), v) for k, v in tree.items())
    elif lists and isinstance(tree, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, sep, lists, f"{prefix}{sep}{key}" if prefix else key))
    return out


def scalars(tree: Any, prefix: str = "") -> dict[str, float]:
    """The numbers among `flatten(tree, "/", prefix=prefix)` as floats (booleans as 0/1); None
    and text are left out, NaN and infinities kept."""
    return {k: float(v) for k, v in flatten(tree, "/", prefix=prefix).items() if isinstance(v, numbers.Real)}


def as_text(value: Any) -> Any:
    """A number, a string or a bool as it is; anything else (lists, None) as JSON text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)


def hyperparameters(config: dict, code: Optional[dict] = None) -> dict[str, Any]:
    """The config flattened with dots, each value a number, a string or a bool (lists and None as
    JSON text), as the HParams plugin and MLflow params take them; `code` (provenance) as `code.*`."""
    return {k: as_text(v) for k, v in flatten({**config, **({"code": code} if code else {})}, ".", lists=False).items()}


def record_metrics(record: dict) -> tuple[int, dict[str, float]]:
    """`(step, metrics)` of a log record, each field under its group (`metric_name`)."""
    metrics = scalars({k: v for k, v in record.items() if k != "step"})
    return int(record["step"]), {metric_name(k): v for k, v in metrics.items()}


# The summary's results, what a user compares runs by: success rate, the final and best values, the
# generalisation per width (its mean over seeds).
RESULT = re.compile(r"(success_rate|final_.+|best_.+|generalization/[^/]+)")
THROUGHPUT = re.compile(r"us_per_step|.+_per_second")


class SummaryParts(NamedTuple):
    """A summary split by where each tracker puts it: `results` (`results/<key>`: TensorBoard's HParams
    metrics, MLflow run metrics, the W&B summary), `throughput` (`results/us_per_step`, ...: MLflow metrics
    and the W&B summary, beside the results, so that every one-point figure is in one group apart from the
    curves), `info` (everything else, bookkeeping as text: MLflow tags, TensorBoard text, W&B config)."""

    results: dict[str, float]
    throughput: dict[str, float]
    info: dict[str, Any]


def summary_parts(summary: dict, run_dir: Optional[Path] = None) -> SummaryParts:
    """`summary` (less its config and code) as `SummaryParts`; a path inside `run_dir` becomes relative to it."""
    fields = {k: v for k, v in summary.items() if k not in ("config", "code")}  # both recorded at start
    numbers_ = scalars(fields)
    results = {f"results/{k}": v for k, v in numbers_.items() if RESULT.fullmatch(k)}
    throughput = {f"results/{k}": v for k, v in numbers_.items() if THROUGHPUT.fullmatch(k)}
    taken = {k.partition("/")[2] for k in [*results, *throughput]}
    info = {}
    for key, value in flatten(fields, ".", lists=False).items():
        if key.replace(".", "/") in taken:
            continue
        if isinstance(value, str) and run_dir is not None and Path(value).is_absolute():
            with contextlib.suppress(ValueError):
                value = Path(value).resolve().relative_to(Path(run_dir).resolve()).as_posix()
        info[key] = as_text(value)
    return SummaryParts(results, throughput, info)


def sample_step(path: Path, default: int) -> int:
    """The step a file was written at, from its name (`samples/step_000200.txt`)."""
    m = re.search(r"step_(\d+)", Path(path).name)
    return int(m.group(1)) if m else default


def status_of(summary: dict) -> str:
    return summary.get("status", "ok")


def resuming(run_dir: Path) -> bool:
    """Whether the run continues a history in `run_dir`: before the loggers start, the driver
    keeps the `metrics.jsonl` lines up to the checkpoint it resumes from, and none on a fresh
    start."""
    path = Path(run_dir) / "metrics.jsonl"
    return path.exists() and path.stat().st_size > 0
