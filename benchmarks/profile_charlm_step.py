"""Where a char-LM training step spends its time, at a given vocabulary size.

    python benchmarks/profile_charlm_step.py --vocab 6041 --vocab 99 --rounds 15

Builds the default char-rnn recipe (embedding 64 -> 2 x LSTM 128 -> dense readout over V
characters -> softmax cross-entropy; batches of 50 sequences x 50 characters; RMSprop 2e-3
behind global-norm clipping at 5) and times, in one process and in interleaved rounds, each
part of one training step as its own jitted program (and, for the whole step, the scratch
memory XLA allocates for it: `memory_analysis().temp_size_in_bytes`):

  step        the whole training step (forward, backward, clip, RMSprop), state donated
  lstm        the two LSTM layers over [T, B, E] inputs, forward + backward
  readout     h [N, H] -> logits [N, V] -> mean cross-entropy, forward + backward (dh, dW, db)
  embed_grad  the embedding's gradient from a cotangent of its output ([T, B, E] -> [V, E])
  optimizer   clip + RMSprop update + apply on parameter-shaped gradients

`--readout` adds the readout implementations of `rnn_jax.softmax` to compare (`plain` is
`log_softmax` + `take_along_axis` on the whole [N, V] logits). Prints the median time of each
part and its ratio to the whole step measured in the same rounds. Random ids: timing only.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import optax

import rnn_jax as rj
from rnn_jax import softmax as sm
from rnn_jax.model import dense
from rnn_jax.tasks.charlm.model import Batch, char_lm, cross_entropy, make_loss
from rnn_jax.training import init_state, make_step
from rnn_jax.unroll import unroll

MEMORY = {}  # (V, part) -> bytes of scratch memory of the compiled training step


def timed(fn, args_fn, warmup: int):
    """A callable timing one call of `fn(*args_fn())`, after `warmup` calls (compile apart)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args_fn()))

    def once():
        args = args_fn()
        jax.block_until_ready(args)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        return time.perf_counter() - t0

    return once


def parse_readout(spec: str):
    """`"fused/256/bf16"` -> `("fused", {"chunk_size": 256, "matmul_dtype": jnp.bfloat16})`."""
    name, *opts = spec.split("/")
    kw = {}
    for o in opts:
        if o == "bf16":
            kw["matmul_dtype"] = jnp.bfloat16
        else:
            kw["chunk_size"] = int(o)
    return name, kw


def parts(V: int, B: int, T: int, E: int, H: int, readouts, seed: int = 0):
    """{name: (jitted fn, args factory)} for every part of the step at vocabulary `V`."""
    key = jax.random.PRNGKey(seed)
    k_ids, k_tg, k_p, k_h, k_g = jax.random.split(key, 5)
    model = char_lm([rj.lstm(H), rj.lstm(H)], V, E)
    params = model.init(k_p)
    optimizer = optax.chain(optax.clip_by_global_norm(5.0), optax.rmsprop(optax.exponential_decay(2e-3, 155, 0.97)))
    inputs = jax.random.randint(k_ids, (B, T), 0, V, jnp.int32)
    targets = jax.random.randint(k_tg, (B, T), 0, V, jnp.int32)
    carry = model.initial_carry((B,))
    out = {}

    for name in readouts:
        readout, kw = parse_readout(name)
        step = jax.jit(make_step(make_loss(model, readout=readout, **kw), optimizer), donate_argnums=0)
        holder = {"state": init_state(jax.tree.map(jnp.copy, params), optimizer)}  # donated: a copy of its own

        def run_step(state, batch, step=step, holder=holder):
            new, (loss, _) = step(state, batch)
            holder["state"] = new
            return loss

        out[f"step[{name}]"] = (run_step, lambda holder=holder: (holder["state"], Batch(inputs, targets, carry, None)))
        compiled = step.lower(holder["state"], Batch(inputs, targets, carry, None)).compile()
        MEMORY[(V, f"step[{name}]")] = compiled.memory_analysis().temp_size_in_bytes

    xs = params.embed[inputs.T]  # [T, B, E]
    gy = jax.random.normal(k_g, (T, B, H))

    @jax.jit
    def lstm_fwd_bwd(layers, xs):
        def f(layers, xs):
            h = xs
            for cell, p in zip(model.cells, layers):
                _, h = unroll(cell, p, h)
            return jnp.vdot(h, gy)

        return jax.grad(f, argnums=(0, 1))(layers, xs)

    out["lstm"] = (lstm_fwd_bwd, lambda: (params.layers, xs))

    h = jax.random.normal(k_h, (T * B, H))
    w, b = params.readout.w, params.readout.b
    tg = targets.T.reshape(-1)
    for name in readouts:
        readout, kw = parse_readout(name)
        loss = partial(sm.READOUT_LOSSES[readout], **kw)
        grad = jax.jit(jax.value_and_grad(lambda h, w, b, t, loss=loss: loss(h, w, b, t), argnums=(0, 1, 2)))
        out[f"readout[{name}]"] = (grad, lambda: (h, w, b, tg))

    # The plain path as the model runs it: time-major [T, B, H] through `dense`, loss on [T, B, V].
    h3 = h.reshape(T, B, H)

    @jax.jit
    def readout_model_path(h3, readout_params, targets):
        def f(h3, rp):
            return cross_entropy(dense(V).apply(rp, h3), targets)

        return jax.value_and_grad(f, argnums=(0, 1))(h3, readout_params)

    out["readout[plain, T x B]"] = (readout_model_path, lambda: (h3, params.readout, targets.T))

    @jax.jit
    def embed_grad(embed, ids, g):
        return jax.grad(lambda e: jnp.vdot(e[ids], g))(embed)

    g_x = jax.random.normal(k_g, (T, B, E))
    out["embed_grad"] = (embed_grad, lambda: (params.embed, inputs.T, g_x))

    grads = jax.tree.map(lambda x: 1e-3 * jnp.ones_like(x), params)
    opt_holder = {"state": (params, optimizer.init(params))}

    @jax.jit
    def opt_update(ps_os, grads):
        ps, os = ps_os
        updates, os = optimizer.update(grads, os, ps)
        return optax.apply_updates(ps, updates), os

    def run_opt(ps_os, grads):
        opt_holder["state"] = opt_update(ps_os, grads)
        return opt_holder["state"]

    out["optimizer"] = (run_opt, lambda: (opt_holder["state"], grads))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, action="append", help="vocabulary sizes (default 6041)")
    p.add_argument(
        "--readout",
        action="append",
        help=f"readouts among {sorted(sm.READOUT_LOSSES)}, each optionally /CHUNK_SIZE and /bf16 "
        "(e.g. fused/256/bf16; default: plain and fused)",
    )
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--embedding", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--only", action="append", help="time only the parts whose name contains one of these")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)
    vocabs = a.vocab or [6041]
    readouts = a.readout or ["plain", "fused"]
    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {platform.processor() or platform.machine()}; "
        f"B={a.batch} T={a.seq_len} E={a.embedding} H={a.hidden} float32; median of {a.rounds} interleaved rounds"
    )
    timers = {}
    for V in vocabs:
        for name, (fn, args_fn) in parts(V, a.batch, a.seq_len, a.embedding, a.hidden, readouts).items():
            if a.only and not any(o in name for o in a.only):
                continue
            timers[(V, name)] = timed(fn, args_fn, a.warmup)
    samples = {k: [] for k in timers}
    for _ in range(a.rounds):
        for k, once in timers.items():
            samples[k].append(once())
    chars = a.batch * a.seq_len
    for V in vocabs:
        first = next(k for k in samples if k[0] == V)
        base = statistics.median(samples[first])
        print(f"\nV={V}: {'part':<22} {'median ms':>10} {'/ ' + first[1]:>16} {'chars/s':>10}")
        for (v, name), ts in samples.items():
            if v != V:
                continue
            m = statistics.median(ts)
            cps = f"{chars / m:10.0f}" if name.startswith("step") else ""
            mem = f"  scratch {MEMORY[(v, name)] / 2**20:.1f} MiB" if (v, name) in MEMORY else ""
            print(f"      {name:<22} {m * 1e3:10.2f} {m / base:16.2f} {cps:>10}{mem}")


if __name__ == "__main__":
    main()
