"""What a task gives the training driver (`Task`, `TaskSpec`) and how its arrays are placed.

A task is a `Task`: a NamedTuple of functions built by the task's `make(cfg, optimizer,
platform)`, in the manner of purejaxrl's `make_train`. The device side is pure (`chunk` runs `k`
optimizer steps as one `lax.scan`, jitted by the driver); the host side folds each chunk's
outputs into a small JSON-able tally and writes nothing but what its hooks are for. The driver
(`rnn_jax.driver.loop`) owns everything else: compiling and timing, the progress bar, signals,
`metrics.jsonl`, checkpoints, resume and the summary.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np

from rnn_jax.config_checks import ConfigError, check_at_least, check_choice, check_fraction, check_positive  # noqa: F401 - the tasks check with these


def check_has_model(cfg) -> None:
    """Tasks that train a model need the `model` section (an experiment may have removed it)."""
    if cfg.model is None:
        raise ConfigError(
            "model", None, f"task {cfg.task.name} trains a model: choose one with model=elman (or lstm, gru, ...)"
        )


AUTO_LOGS = 200  # train.log_every=auto logs about this many times over train.steps, at most every 100 steps


def log_every(train) -> int:
    """The steps per compiled chunk (between two log lines) of `train` (a `TrainConfig`): its
    `log_every`, or for `auto` `train.steps // AUTO_LOGS` within 1..100, so that a short run still
    draws a curve (2000 steps: every 10, which the default addition run, stopping when solved at
    about step 150, turns into some 15 points) and a long one pays for one log per 100 steps."""
    if train.log_every != "auto":
        return int(train.log_every)
    return max(1, min(100, train.steps // AUTO_LOGS))


class Task(NamedTuple):
    """One task, as the driver runs it.

    Attributes:
      init: `() -> state`, the initial training state on the device (a pytree; checkpointed whole).
      consts: a device pytree every chunk reads and no step changes (data streams, evaluation
        sets); passed as an argument, so it is neither a compile-time constant nor checkpointed.
      chunk: `(state, consts, first_step, k) -> (state, outputs)`, pure: steps
        `first_step .. first_step + k - 1`; the driver jits it with `k` static.
      observe: `(tally, outputs, step) -> (tally, fields)`, on the host: folds one chunk's outputs
        (as NumPy) into the tally and returns the task's fields of the chunk's log line.
      tally: the tally before the first step (a JSON-able dict, saved in each checkpoint).
      finished: `tally -> bool`: stop early, having succeeded (every seed solved).
      diverged: `tally -> bool`: the loss turned NaN or Inf (in every seed): the run stops,
        `failed`, and the diverged state is never checkpointed.
      summarize: `(state, tally) -> dict`, the task's fields of `summary.json`; may evaluate
        (it reports the seconds it spent compiling as `compile_seconds`).
      validate: `(state, step) -> (fields, files)`, every `eval_every` steps and at the end, on
        the host: the log line's validation fields, and text files for the run directory
        (`{relative path: text}`, e.g. samples) that the driver writes; None when the task has none.
      eval_every: steps between validations (and `checkpoints/last`); None: only at the end.
      best: the `validate` field whose lowest value `checkpoints/best` keeps; None: no best.
      identity: what a checkpoint must have been made for, besides the state's shapes (the
        char-LM's vocabulary): a resume that finds another is refused.
      progress: the log fields the progress bar shows.
      throughput: `(unit, per_step)`, e.g. `("chars", 2500)`: logs `<unit>_per_sec` and sums up
        `<unit>_per_second`; None: steps only.
      compile_options: XLA options for the chunk program.
      partition: `(state_spec, consts_spec)`, how the state and the constants are split over the
        run's devices (PartitionSpecs over the mesh axis "data", prefixes of the trees); None:
        whole on every device.
      log_line: `record -> str`: the driver prints each log record as this line (None: nothing).
    """

    init: Callable[[], Any]
    consts: Any
    chunk: Callable[..., tuple]
    observe: Callable[[dict, Any, int], tuple]
    tally: dict
    finished: Callable[[dict], bool]
    diverged: Callable[[dict], bool]
    summarize: Callable[[Any, dict], dict]
    validate: Optional[Callable[[Any, int], tuple]] = None
    eval_every: Optional[int] = None
    best: Optional[str] = None
    identity: Optional[dict] = None
    progress: tuple = ()
    throughput: Optional[tuple] = None
    compile_options: Optional[dict] = None
    partition: Optional[tuple] = None
    log_line: Optional[Callable[[dict], str]] = None


class TaskSpec(NamedTuple):
    """A registry entry (`rnn_jax.tasks.TASKS`): how to configure, check and build a task."""

    config: type  # the dataclass schema of `conf/task/<name>.yaml`
    check: Callable[[Any], None]  # (full config) -> None; raises ConfigError
    make: Callable[..., Task]  # (full config, optimizer, devices: rnn_jax.driver.backend.Devices) -> Task
    memory: Callable[[Any], dict]  # (full config) -> {what: bytes} at the peak, estimated before anything is built
    parallel: Callable[
        [Any], tuple
    ]  # (full config) -> (key, size) of the axis split over devices, e.g. ("task.seeds", 8)
    objective: str  # the summary field a sweeper optimises
    description: str


def place(tree: Any, mesh, spec: Any = None) -> Any:
    """`tree` as global arrays on `mesh`, each leaf split as `spec` says (a `PartitionSpec`, or a
    pytree of them that is a prefix of `tree`; None: every leaf whole on every device). Every
    process passes the same values and each places only its own devices' part, so this serves
    one process or many."""
    from jax.sharding import NamedSharding, PartitionSpec

    def put(leaf, s):
        sharding = NamedSharding(mesh, s if s is not None else PartitionSpec())
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    if spec is None or isinstance(spec, PartitionSpec):
        return jax.tree.map(lambda leaf: put(leaf, spec), tree)
    return jax.tree.map(
        lambda s, sub: jax.tree.map(lambda leaf: put(leaf, s), sub),
        spec,
        tree,
        is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None,
    )


def to_host(tree: Any) -> Any:
    """`tree`'s arrays as NumPy, gathered from every process when the run spans several."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
