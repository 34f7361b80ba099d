"""The float32 difference between the parallel and the sequential scan at T = 8,192, and of each
against the float64 sequential run (docs/parallel_cells.md). Run: python benchmarks/parallel_cells_precision.py"""

import jax
import jax.numpy as jnp
import numpy as np

import rnn_jax as rj

jax.config.update("jax_enable_x64", True)
T, B, I, H = 8192, 4, 8, 16
xs64 = jnp.asarray(np.random.default_rng(0).standard_normal((T, B, I)))
for name in ["mingru", "minlstm", "lru", "rglru"]:
    cell = rj.CELLS[name](H)
    params64 = jax.tree.map(lambda p: p.astype(jnp.float64), cell.init(jax.random.PRNGKey(0), I))
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params64)
    run = jax.jit(lambda p, xs, scan: rj.unroll(cell, p, xs, scan=scan)[1], static_argnums=2)
    ref = np.asarray(run(params64, xs64, "sequential"))
    seq = np.asarray(run(params32, xs64.astype(jnp.float32), "sequential"), np.float64)
    par = np.asarray(run(params32, xs64.astype(jnp.float32), "parallel"), np.float64)
    scale = np.abs(ref).max()
    print(
        f"{name:8s} max|parallel - sequential| / max|y| = {np.abs(par - seq).max() / scale:.1e}   "
        f"vs float64: sequential {np.abs(seq - ref).max() / scale:.1e}, parallel {np.abs(par - ref).max() / scale:.1e}"
    )
