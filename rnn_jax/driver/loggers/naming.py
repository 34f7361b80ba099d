"""How a run and its figures are named in the trackers: relative names only, never a path of this
machine (a job by its overrides, a sweep by its directory relative to the working directory), and
each record's field under its group (`train/loss`, `val/bpc`, `perf/chars_per_sec`)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple, Optional, Sequence


class RunNames(NamedTuple):
    """How a run is named in the trackers: relative names only, never a path of this machine.

    `run`: the job's overrides (`model.hidden=4,task.bits=6`), else its directory's name;
    `group`: the sweep's directory relative to the working directory (None for a run alone)."""

    run: str
    group: Optional[str]


def job_name(overrides: Sequence[str], run_dir: Path) -> str:
    """A job's name from its command-line overrides, less those that do not change the training (the
    trackers, the progress bar): `["logger=mlflow", "model.hidden=4"]` -> `model.hidden=4`; the run
    directory's name when nothing else was given."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("logger", "train.progress"))]
    return ",".join(kept) or Path(run_dir).name


def relative_name(path: Path) -> str:
    """`path` relative to the working directory (`experiments/multirun/2026-12-06/14-02-11-42`), or its last
    two parts when it lies elsewhere: a name that means the same on any machine."""
    path = Path(path).resolve()
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd().resolve()).as_posix()
    return "/".join(path.parts[-2:])


def dir_name(name: str) -> str:
    """`name` as one folder's name (TensorBoard names a run by its folder): no separators, at most 200 chars."""
    return name.replace("/", "_").replace("\\", "_")[:200] or "_"


def metric_name(key: str) -> str:
    """A record's field under the group a tracker shows it in: `train/`, `val/`, `perf/`, or `per_seed/` as it
    is. `loss` and `accuracy` (addition), `train_bpc` -> `train/bpc`, `val_bpc` -> `val/bpc`,
    `chars_per_sec` -> `perf/chars_per_sec`, `elapsed` -> `perf/elapsed_seconds`."""
    head, _, rest = key.partition("/")
    if head == "elapsed":
        return "perf/elapsed_seconds"
    if head.endswith("_per_sec"):
        return f"perf/{key}"
    for split in ("train", "val", "test"):
        if head.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1 :]}"
    return key if head in ("per_seed", "train", "val", "test", "perf") and rest else f"train/{key}"
