"""The benchmark's rows: for each implementation (rnn_jax's variants, Flax's `nn.RNN` cells, PyTorch)
a `Runner` compiled for one grid point, its compilation timed apart."""

from __future__ import annotations

import time
from typing import Optional

from rnn_jax.apps.bench_grid import LINEAR_CELL_NAMES, BenchConfig, Point, Runner
from rnn_jax.apps.bench_torch import torch_runner


def _tokens(key, p: Point, vocab: int):
    import jax

    tokens = jax.random.randint(key, (p.seq_len + 1, p.batch), 0, vocab)  # [T+1, B]
    return tokens[:-1], tokens[1:]  # inputs, next-token targets


def _compiled(fn, *args, donate=()):
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _jax_runner(p: Point, cfg: BenchConfig, init, logits, layer, unroll) -> Runner:
    """A runner from `init(key) -> params`, `logits(params, tokens[T, B]) -> [T, B, V]` and
    `layer(params, xs[T, B, I]) -> ys`, the recurrent layer alone (forward mode)."""
    import jax
    import optax

    key_p, key_t, key_x = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    params = init(key_p)
    if p.mode == "forward":
        xs = jax.random.normal(key_x, (p.seq_len, p.batch, p.input))  # [T, B, I]
        compiled, seconds = _compiled(layer, params, xs)
        return Runner(lambda: jax.block_until_ready(compiled(params, xs)), seconds, unroll)

    opt = optax.adam(cfg.lr)
    inputs, targets = _tokens(key_t, p, cfg.vocab)

    def loss(params, inputs, targets):
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, inputs), targets).mean()

    def train_step(state, inputs, targets):
        params, opt_state = state
        value, grads = jax.value_and_grad(loss)(params, inputs, targets)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    state = [(params, opt.init(params))]
    compiled, seconds = _compiled(train_step, state[0], inputs, targets, donate=(0,))

    def call():
        state[0], value = compiled(state[0], inputs, targets)
        return jax.block_until_ready(value)

    return Runner(call, seconds, unroll)


def rnn_jax_runner(p: Point, cfg: BenchConfig, implementation: str) -> Runner:
    """rnn_jax's rows: in train mode the very step the training driver runs for a char-LM
    (`rnn_jax.tasks.charlm.model.char_lm`, its `make_loss`, `rnn_jax.training.make_step`), with a
    one-layer model and Adam; in forward mode the recurrent layer alone."""
    import jax
    import jax.numpy as jnp
    import optax

    import rnn_jax as rj
    from rnn_jax import fused
    from rnn_jax.tasks.charlm.model import Batch, char_lm, make_loss
    from rnn_jax.training import init_state, make_step

    linear = p.cell in LINEAR_CELL_NAMES
    variants = {"rnn_jax": dict(), "rnn_jax_sequential": dict()}  # LSTM, GRU: their one (sequential) default path
    if linear:  # the linear-recurrence cells: the scan, f32 only
        variants.update(rnn_jax_sequential=dict(scan="sequential"), rnn_jax_parallel=dict(scan="parallel"))
    else:
        variants.update(
            rnn_jax_fused=dict(backward="fused"),
            rnn_jax_autodiff=dict(backward="autodiff"),
            rnn_jax_remat=dict(remat=True),
        )
    options = variants.get(implementation)
    if options is None or (linear and p.dtype != "float32"):
        return None
    if p.dtype == "bfloat16":
        options = dict(options, matmul_dtype=jnp.bfloat16)
    cell = rj.CELLS[p.cell](p.hidden, **options)
    unroll = p.unroll or None
    resolved = fused.resolve(options.get("backward", "auto"), unroll, options.get("remat", False))[1]
    key_p, key_t, key_x = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    if p.mode == "forward":
        params = cell.init(key_p, p.input)
        xs = jax.random.normal(key_x, (p.seq_len, p.batch, p.input))  # [T, B, I]
        compiled, seconds = _compiled(lambda params, xs: rj.unroll(cell, params, xs, unroll=unroll)[1], params, xs)
        return Runner(lambda: jax.block_until_ready(compiled(params, xs)), seconds, resolved)

    model = char_lm([cell], cfg.vocab, p.input)
    optimizer = optax.adam(cfg.lr)
    step = make_step(make_loss(model, unroll), optimizer)
    inputs, targets = (t.T for t in _tokens(key_t, p, cfg.vocab))  # [B, T], as the char-LM's batches
    batch = Batch(inputs, targets, model.initial_carry((p.batch,)), None)
    state = [init_state(model.init(key_p), optimizer)]
    compiled, seconds = _compiled(step, state[0], batch, donate=(0,))

    def call():
        state[0], (value, _) = compiled(state[0], batch)
        return jax.block_until_ready(value)

    return Runner(call, seconds, resolved)


def flax_runner(p: Point, cfg: BenchConfig, implementation: str) -> Optional[Runner]:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    if (implementation == "flax_optimized" and p.cell != "lstm") or p.cell in LINEAR_CELL_NAMES:
        return None
    cell_type = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}[p.cell]
    if implementation == "flax_optimized":
        cell_type = nn.OptimizedLSTMCell
    dtype = jnp.bfloat16 if p.dtype == "bfloat16" else jnp.float32
    unroll = p.unroll or 1
    # Flax's cells compute in `dtype` throughout (their nearest bf16 equivalent); params stay f32.
    rnn = nn.RNN(cell_type(p.hidden, dtype=dtype, param_dtype=jnp.float32), time_major=True, unroll=unroll)
    embed, readout = nn.Embed(cfg.vocab, p.input), nn.Dense(cfg.vocab)

    def init(key):
        k_e, k_c, k_r = jax.random.split(key, 3)
        xs = jnp.zeros((p.seq_len, p.batch, p.input))
        return {
            "embed": embed.init(k_e, jnp.zeros((1,), jnp.int32)),
            "cell": rnn.init(k_c, xs),
            "readout": readout.init(k_r, jnp.zeros((1, p.hidden))),
        }

    def layer(params, xs):
        return rnn.apply(params["cell"], xs).astype(jnp.float32)

    def logits(params, tokens):
        return readout.apply(params["readout"], layer(params, embed.apply(params["embed"], tokens)))

    return _jax_runner(p, cfg, init, logits, layer, unroll)


def make_runner(p: Point, cfg: BenchConfig, implementation: str) -> Optional[Runner]:
    """The runner, or None where the implementation has no such variant (noted in bench.json)."""
    if implementation.startswith("rnn_jax"):
        return rnn_jax_runner(p, cfg, implementation)
    if implementation.startswith("flax"):
        return flax_runner(p, cfg, implementation)
    return torch_runner(p, cfg)
