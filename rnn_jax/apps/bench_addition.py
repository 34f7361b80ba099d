"""Benchmark: the 2015 numpy RNN against rnn_jax's `experiment=seed_replication`, in one process.

    python -m rnn_jax.bench_addition [--steps 10000] [--repeats 5] [--out bench_addition.json]

Both train the same network from the same initial weights on the same 10,000 examples (the
2015 script's numpy stream, seed 0); the final weights are checked to agree before any figure
is printed. rnn_jax's compile time is reported apart from its steady state (the median of
`--repeats` runs of the compiled whole-training function, each ended with `block_until_ready`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from rnn_jax.driver.backend import device_info
from rnn_jax.tasks.addition import reference2015


def replication_config(steps: int):
    """The `experiment=seed_replication` config, composed from conf/ exactly as the app does."""
    from hydra import compose, initialize_config_dir

    from rnn_jax.apps import CONF_DIR
    from rnn_jax.apps.train import to_config

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return to_config(compose("config", overrides=["experiment=seed_replication", f"train.steps={steps}"]))


def bench(steps: int = 10_000, repeats: int = 5) -> dict:
    from rnn_jax.driver.backend import one_device
    from rnn_jax.driver.optim import make_optimizer
    from rnn_jax.tasks.addition.task import make

    cfg = replication_config(steps)
    jax.config.update("jax_enable_x64", cfg.train.dtype == "float64")  # as the driver does
    task = make(cfg, make_optimizer(cfg.optim, steps), one_device())
    program = task.program
    consts = program.consts._replace(eval=None)  # training only, no evaluation
    state = program.init()  # not donated: every repeat starts from it
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    # The chunk the driver compiles, with the same options, over all the steps at once.
    compiled = (
        jax.jit(program.chunk, static_argnums=3)
        .lower(state, consts, np.int32(0), steps)
        .compile(compiler_options=program.compile_options)
    )
    compile_seconds = time.perf_counter() - t0

    jax_times, numpy_times = [], []
    final = None
    for _ in range(repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        out = compiled(state, consts, np.int32(0))
        jax.block_until_ready(out)
        jax_times.append(time.perf_counter() - t0)
        final = out[0].train
        ref_weights, seconds = reference2015.train(cfg.seed, steps, cfg.task.bits, cfg.model.hidden, cfg.optim.lr)
        numpy_times.append(seconds)

    max_diff = max(
        float(np.max(np.abs(np.asarray(a)[0] - b)))
        for a, b in [
            (final.params.cell.w_x, ref_weights.w_in),
            (final.params.cell.w_h, ref_weights.w_rec),
            (final.params.readout.w, ref_weights.w_out),
        ]
    )
    if max_diff > 1e-8:
        raise AssertionError(
            f"rnn_jax and the numpy reference disagree after {steps} updates (max |dw| = {max_diff:g})"
        )
    jax_s, numpy_s = statistics.median(jax_times), statistics.median(numpy_times)
    return {
        "benchmark": "addition seed_replication",
        "steps": steps,
        "repeats": repeats,
        "numpy_seconds": numpy_s,
        "numpy_us_per_update": 1e6 * numpy_s / steps,
        "rnn_jax_seconds": jax_s,
        "rnn_jax_us_per_update": 1e6 * jax_s / steps,
        "rnn_jax_compile_seconds": compile_seconds,
        "speedup": numpy_s / jax_s,
        "max_weight_difference": max_diff,
        **device_info(),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write the record as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    r = bench(args.steps, args.repeats)
    print(f"numpy 2015 reference : {r['numpy_seconds']:.3f} s  ({r['numpy_us_per_update']:.1f} us/update)")
    print(
        f"rnn_jax replication  : {r['rnn_jax_seconds']:.4f} s  ({r['rnn_jax_us_per_update']:.2f} us/update), "
        f"compile {r['rnn_jax_compile_seconds']:.2f} s"
    )
    print(
        f"speed-up             : {r['speedup']:.1f}x  (same weights after {r['steps']} updates, "
        f"max |dw| {r['max_weight_difference']:.1e}; {r['device_kind']}, jax {r['jax_version']})"
    )
    if args.out:
        from rnn_jax.driver.rundir import atomic_write_json

        atomic_write_json(args.out, r)
    return r


if __name__ == "__main__":
    main()
