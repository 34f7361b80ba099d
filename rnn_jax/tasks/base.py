"""What a task gives the training driver: a device program and a host report, plus small
optional pieces, in the manner of optax's `GradientTransformation(init, update)`.

    Task(program=Program(init, chunk, consts), report=Report(tally, observe, status, summarize),
         validation=Validation(...) | None, display=Display(...), identity={...} | None)

`Program` is pure device code: a caller may `jit` it, `vmap` its `chunk` over several
configurations of one shape (their states and constants stacked), or split it over devices by
its `partition`. `Report` runs on the host between chunks and holds no array: it folds each
chunk's outputs into a typed tally (a NamedTuple of JSON-able fields, saved with each
checkpoint), says whether the run goes on, and summarises. A task's pieces are module-level
functions of explicit arguments, bound with `functools.partial` by its `make(cfg, optimizer,
devices)`, so each can be tested alone on hand-made inputs. The driver (`rnn_jax.driver.loop`)
owns everything else: compiling and timing, the progress bar, signals, `metrics.jsonl`,
checkpoints, resume and the summary.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np

from rnn_jax.config_checks import (  # noqa: F401 - the tasks check with these
    ConfigError,
    check_at_least,
    check_choice,
    check_fraction,
    check_positive,
)


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


class Program(NamedTuple):
    """The device side of a task: pure functions of arrays.

    Attributes:
      init: `() -> state`, the initial training state (a pytree; checkpointed whole).
      chunk: `(state, consts, first_step, k) -> (state, outputs)`: steps `first_step ..
        first_step + k - 1`; `k` is static (the driver jits with `static_argnums=3`).
      consts: a pytree every chunk reads and no step changes (data streams, evaluation sets);
        an argument, so neither a compile-time constant nor checkpointed.
      partition: `(state_spec, consts_spec)`, how the state and the constants are split over the
        run's devices (PartitionSpecs over the mesh axis "data", prefixes of the trees); None:
        whole on every device.
      compile_options: XLA options for the chunk program.
    """

    init: Callable[[], Any]
    chunk: Callable[..., tuple]
    consts: Any
    partition: Optional[tuple] = None
    compile_options: Optional[dict] = None


TRAINING, SOLVED, DIVERGED = "training", "solved", "diverged"  # what `Report.status` says


class Report(NamedTuple):
    """The host side of a task: the tally and what is read from it.

    Attributes:
      tally: the tally before the first step, a NamedTuple of JSON-able fields (a resumed run
        rebuilds it from the checkpoint's `tally._asdict()`; a field missing there keeps this
        value).
      observe: `(tally, outputs, step) -> (tally, fields)`: folds one chunk's outputs (as NumPy)
        into the tally; `fields` are the task's part of the chunk's log line.
      status: `tally -> TRAINING | SOLVED | DIVERGED`. SOLVED stops early, having succeeded;
        DIVERGED (the loss turned NaN or Inf) stops the run `failed`, and the diverged state is
        never checkpointed.
      summarize: `(state, tally) -> dict`, the task's fields of `summary.json`; may evaluate (it
        reports the seconds it spent compiling as `compile_seconds`).
    """

    tally: Any
    observe: Callable[[Any, Any, int], tuple]
    status: Callable[[Any], str]
    summarize: Callable[[Any, Any], dict]


class Validation(NamedTuple):
    """Optional: a host evaluation every `every` steps and at the end.

    Attributes:
      validate: `(state, step) -> (fields, files)`: the log line's validation fields, and text
        files for the run directory (`{relative path: text}`, e.g. samples).
      every: steps between validations (and saves of `checkpoints/last`).
      best: the field whose lowest value `checkpoints/best` keeps; None: no best checkpoint.
    """

    validate: Callable[[Any, int], tuple]
    every: int
    best: Optional[str] = None


class Display(NamedTuple):
    """Optional: how the run shows itself.

    Attributes:
      progress: the log fields the progress bar shows.
      throughput: `(unit, per_step)`, e.g. `("chars", 2500)`: logs `<unit>_per_sec` and sums up
        `<unit>_per_second`; None: steps only.
      log_line: `record -> str`: the driver prints each log record as this line (None: nothing).
    """

    progress: tuple = ()
    throughput: Optional[tuple] = None
    log_line: Optional[Callable[[dict], str]] = None


class Task(NamedTuple):
    """One task as the driver runs it: a program, a report, and the optional pieces.

    `identity`: what a checkpoint must have been made for besides the state's shapes (the
    char-LM's vocabulary); a resume that finds another is refused."""

    program: Program
    report: Report
    validation: Optional[Validation] = None
    display: Display = Display()
    identity: Optional[dict] = None


def restore_tally(initial: Any, saved: Optional[dict]) -> Any:
    """The tally of type `type(initial)` from a checkpoint's dict; fields it lacks keep `initial`'s."""
    known = {k: v for k, v in (saved or {}).items() if k in initial._fields}
    return initial._replace(**known)


def parameter_count(init: Callable[[Any], Any]) -> int:
    """The number of parameters `init(key)` makes, from its shapes alone (`jax.eval_shape`)."""
    shapes = jax.eval_shape(init, jax.random.key(0))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def values_kept_per_step(init: Callable[[Any], Any], forward: Callable[[Any, Any], Any], step_input) -> int:
    """The values the backward pass of `forward(params, xs)` keeps per time step and example:
    the residuals of `jax.vjp` (abstract, nothing is computed) for a sequence of 2 steps less
    those for 1, of one example. `step_input`: a `jax.ShapeDtypeStruct` of one step of one
    example (`[input_size]` floats, or `[]` ids); `xs` is `[T, 1, *step_input.shape]`."""
    params = jax.eval_shape(init, jax.random.key(0))

    def kept(steps: int) -> int:
        xs = jax.ShapeDtypeStruct((steps, 1, *step_input.shape), step_input.dtype)
        residuals = jax.eval_shape(lambda p, x: jax.vjp(lambda q: forward(q, x), p)[1], params, xs)
        return sum(math.prod(x.shape) for x in jax.tree.leaves(residuals))

    return kept(2) - kept(1)


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
