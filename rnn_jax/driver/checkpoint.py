"""Checkpoints with Orbax: `checkpoints/last` keeps the newest steps, `checkpoints/best` the best one.

Each is an Orbax `CheckpointManager` directory whose steps are committed atomically (a step
interrupted while being written is never listed), holding the training state (`state`) and a
JSON description (`meta`: the step, the config, the task's tally). A restore takes the newest
step that reads back and fits; one that does not read back (a damaged file) is reported and
skipped for the one before, so a run is refused only when no good checkpoint is left. A state
that does not fit the run (other shapes, dtypes or structure, i.e. other settings) is refused
with the settings that differ, never cast or padded.

`load(path)` reads a checkpoint without the code that trained it: nested dicts of NumPy arrays
and the meta; `path` is a run directory, its `checkpoints/last` or `checkpoints/best`, or one
step's directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

from rnn_jax.driver.rundir import finite_or_null

log = logging.getLogger("rnn_jax")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the run."""


def _brief(error: Exception) -> str:
    """An Orbax or TensorStore error in a few words (theirs run to kilobytes of spec)."""
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first[:160]}{'...' if len(first) > 160 else ''}"


def _ocp():
    import orbax.checkpoint as ocp  # imported when first needed: it takes a second or more

    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax reports every save and restore at INFO
    return ocp


def _manager(directory: Path, keep: Optional[int]):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=False)
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_handlers=handlers)


class Checkpoints:
    """The checkpoints of one run directory: `last` (the newest `keep` steps) and `best`."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = {"last": keep, "best": 1}
        self._managers: dict[str, Any] = {}

    def manager(self, which: str):
        if which not in self._managers:
            (self.root / which).mkdir(parents=True, exist_ok=True)
            self._managers[which] = _manager(self.root / which, self.keep[which])
        return self._managers[which]

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
        self._managers = {}

    def exists(self, which: str = "last") -> bool:
        return bool(steps_in(self.root / which))

    def save(self, which: str, step: int, state: Any, meta: dict) -> None:
        """Saves `state` as step `step` of `which`; an error (a full disk) leaves the steps
        saved before as they were, and says so."""
        ocp = _ocp()
        manager = self.manager(which)
        if step in manager.all_steps():
            manager.delete(step)  # the same step again (a rerun's final save): the newer wins
        try:
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(finite_or_null(meta))
                ),
            )
        except OSError as e:
            kept = ", ".join(map(str, steps_in(self.root / which))) or "none"
            raise OSError(
                e.errno,
                f"saving checkpoint step {step} failed ({e.strerror}); the steps saved before are intact: {kept}",
                str(self.root / which),
            ) from e

    def restore(self, which: str, template: Any, check=None):
        """`(state, meta)` of the newest step of `which` that reads back, shaped like `template`.

        `check(meta, problem)` sees each step's meta before its arrays are read, with `problem`
        saying how its arrays differ from the template's (None: they fit); it raises the error
        to give (another task, other settings)."""
        return restore_newest(self.root / which, template, check)


def steps_in(directory: Path) -> list[int]:
    """The committed steps of an Orbax checkpoint directory, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()]
    return sorted(steps, reverse=True)


def _step_dir(path: Path) -> tuple[Path, int]:
    """The directory holding steps and the step `path` names (a run directory, a manager
    directory or one step's directory)."""
    path = Path(path)
    if path.name.isdigit() and (path / "_CHECKPOINT_METADATA").exists():
        return path.parent, int(path.name)
    if (path / "checkpoints" / "last").is_dir():
        path = path / "checkpoints" / "last"
    steps = steps_in(path)
    if not steps:
        raise CheckpointError(f"checkpoint {path}: no such checkpoint (no committed step in it)")
    return path, steps[0]


def read_meta(path: Path, step: Optional[int] = None) -> dict:
    """A step's meta alone, without reading the arrays (the newest step when `step` is None)."""
    directory, newest = _step_dir(path)
    ocp = _ocp()
    try:
        with _manager(directory, None) as manager:
            return manager.restore(
                step if step is not None else newest, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            ).meta
    except Exception as e:  # noqa: BLE001 - Orbax raises several types for damaged files
        raise CheckpointError(
            f"checkpoint {directory}: the description of step {step or newest} is unreadable ({_brief(e)})"
        ) from None


def _named_leaves(tree, is_leaf=None) -> dict:
    """`{"train.params.w_h": leaf}`: leaves by their path, whatever containers hold them (Orbax
    stores NamedTuples as dicts, whose keys sort otherwise than the fields)."""

    def name(entry):
        for attr in ("name", "key", "idx"):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)

    return {
        ".".join(name(e) for e in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    }


def _array_problem(template: Any, metadata: Any) -> Optional[str]:
    """Where the saved arrays differ from `template` in structure, shape or dtype; None if nowhere."""
    is_array = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")  # noqa: E731 - Orbax's ArrayMetadata
    saved = _named_leaves(metadata.tree if hasattr(metadata, "tree") else metadata, is_array)
    wanted = _named_leaves(template)
    if set(saved) != set(wanted):
        missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
        return (
            f"its arrays are not this run's (missing: {', '.join(missing) or 'none'}; "
            f"not used: {', '.join(extra) or 'none'})"
        )
    for key, t in wanted.items():
        s = saved[key]
        if tuple(s.shape) != tuple(np.shape(t)) or np.dtype(s.dtype) != np.dtype(t.dtype):
            return f"{key} is {np.dtype(s.dtype)}{list(s.shape)}, this run's is {np.dtype(t.dtype)}{list(np.shape(t))}"
    return None


def restore_newest(directory: Path, template: Any, check=None):
    """`(state, meta)` from the newest step in `directory` that reads back; see `Checkpoints.restore`."""
    steps = steps_in(directory)
    if not steps:
        raise CheckpointError(f"checkpoint {directory}: no committed step in it")
    with _manager(directory, None) as manager:
        return _restore_newest(manager, directory, steps, template, check)


def _restore_newest(manager, directory: Path, steps: list[int], template: Any, check):
    ocp = _ocp()
    skipped = []
    for step in steps:
        try:
            metadata = manager.item_metadata(step)["state"]
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as e:  # noqa: BLE001 - a damaged step: try the one before
            skipped.append(f"step {step} ({type(e).__name__})")
            continue
        problem = _array_problem(template, metadata)
        if check is not None:
            check(meta, problem)
        if problem is not None:
            raise CheckpointError(f"checkpoint {directory} step {step} does not fit this run: {problem}")
        try:
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template))).state
        except Exception as e:  # noqa: BLE001
            skipped.append(f"step {step} ({type(e).__name__})")
            continue
        if skipped:
            log.warning("checkpoint %s: skipped unreadable %s; restored step %d", directory, ", ".join(skipped), step)
        return state, meta
    raise CheckpointError(f"checkpoint {directory}: no step reads back ({', '.join(skipped)})")


def load(path, target: Any = None):
    """`(state, meta)` of the checkpoint at `path` (see the module docstring): without `target`,
    nested dicts and lists of NumPy arrays; with it, a pytree shaped like `target`."""
    directory, step = _step_dir(path)
    ocp = _ocp()
    with _manager(directory, None) as manager:
        try:
            metadata = manager.item_metadata(step)["state"]
        except Exception as e:  # noqa: BLE001 - Orbax raises several types for damaged files
            raise CheckpointError(f"checkpoint {directory} step {step} is unreadable ({_brief(e)})") from None
        if target is not None:
            problem = _array_problem(target, metadata)
            if problem is not None:
                raise CheckpointError(f"checkpoint {directory} step {step} does not fit: {problem}")
        else:  # NumPy arrays of the saved dtypes (JAX arrays would be float32 without x64)
            is_array = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")  # noqa: E731
            target = jax.tree.map(
                lambda m: np.zeros(m.shape, m.dtype),
                metadata.tree if hasattr(metadata, "tree") else metadata,
                is_leaf=is_array,
            )
        try:
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {directory} step {step} is unreadable ({_brief(e)})") from None
    return restored.state, restored.meta


def to_target(path, target: Any, nested: Any):
    """`nested` (part of what `load` returns without a target) as a pytree shaped like `target`;
    `CheckpointError`, naming `path`, when its arrays are not `target`'s."""
    problem = _array_problem(target, nested)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} does not fit: {problem}")
    saved = _named_leaves(nested)
    return jax.tree_util.tree_unflatten(jax.tree.structure(target), [saved[k] for k in _named_leaves(target)])
