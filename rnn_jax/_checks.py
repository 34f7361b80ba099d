"""Argument checks shared by the factories: one clear message naming the argument."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_choice(value, name: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
    return value


def check_width(x, expected: int, name: str = "x") -> None:
    if x.shape[-1:] != (expected,):
        raise ValueError(
            f"{name} must have last dimension {expected} (the input size the params were made for), "
            f"got shape {tuple(x.shape)}"
        )


def as_input(x, w, name: str = "x"):
    """`x` checked against the weights `w [in, out]` it will be multiplied with, and cast to their
    dtype: inputs follow the parameters' precision (bf16 parameters take float32 data), so a
    carry computed from them keeps one dtype through `lax.scan`."""
    check_width(x, w.shape[0], name)
    return x if x.dtype == w.dtype else x.astype(w.dtype)


def add_last(x, v):
    """`x + v` for `v` of shape `[n]` against `x` of shape `[..., n]`, explicit about the broadcast
    (so the library also runs under `jax_numpy_rank_promotion="raise"`)."""
    return x + jnp.reshape(v, (1,) * (x.ndim - 1) + (-1,))


# ---------------------------------------------------------------- arguments of cells and unrolls
# Python-level checks at trace time: shapes and pytree structure only, against what the cell's own
# `init` and `initial_carry` make (traced abstractly, once per cell and size), so a new cell is
# checked with no code of its own. Nothing here runs on the device or enters a traced program.

_KEY = jax.ShapeDtypeStruct((2,), jnp.uint32)  # an abstract raw PRNG key: `init` is traced, never run


@functools.lru_cache(maxsize=512)
def _made_by_init(init, input_size: int):
    return jax.eval_shape(lambda key: init(key, input_size), _KEY)


@functools.lru_cache(maxsize=512)
def _made_by_initial_carry(initial_carry, batch_shape: tuple):
    return jax.eval_shape(lambda: initial_carry(batch_shape))


def describe(tree) -> str:
    """A pytree on one line, containers by type and leaves by shape: `LSTMParams(w_x=[3, 16], ...)`."""
    if tree is None:
        return "None"
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return f"{type(tree).__name__}({', '.join(f'{k}={describe(v)}' for k, v in zip(tree._fields, tree))})"
    if isinstance(tree, (tuple, list)):
        return f"{type(tree).__name__}({', '.join(map(describe, tree))})"
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in tree.items()) + "}"
    if hasattr(tree, "shape"):
        return f"[{', '.join(map(str, tree.shape))}]"
    return type(tree).__name__


def check_bool(value, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_params(init, params, x_shape=None, x_name: str = "x") -> None:
    """Refuses `params` that `init(key, input_size)` would not make, `input_size = x_shape[-1]`:
    another pytree, such as the params of another kind of cell (TypeError), or other shapes
    (ValueError): another hidden size names the params' leaf; another input size names `x`.
    `x_shape` None (a step's projected input): shapes that depend on the input size are not checked."""
    n = 1 if x_shape is None else x_shape[-1]
    want = _made_by_init(init, n)
    got, got_def = jax.tree_util.tree_flatten_with_path(params)
    if got_def != jax.tree.structure(want):
        raise TypeError(f"params must be {describe(want)} as the cell's init makes them, got {describe(params)}")
    wants = [w.shape for w in jax.tree.leaves(want)]
    bad = [i for i, ((_, g), w) in enumerate(zip(got, wants)) if np.shape(g) != w]
    if not bad:
        return
    wider = [w.shape for w in jax.tree.leaves(_made_by_init(init, n + 1))]  # which axes grow with the input
    bad.sort(key=lambda i: wants[i] != wider[i])  # first the shapes free of the input size: w_h before w_x
    for i in bad:
        path, g = got[i][0], np.shape(got[i][1])
        fixed = [k for k, (a, b) in enumerate(zip(wants[i], wider[i])) if a == b]
        if len(g) != len(wants[i]) or any(g[k] != wants[i][k] for k in fixed):
            shown = [str(d) if k in fixed or x_shape is not None else "input" for k, d in enumerate(wants[i])]
            shown = f"({', '.join(shown)}{',' if len(shown) == 1 else ''})"  # as a tuple prints
            leaf = f"params{jax.tree_util.keystr(path)}"
            raise ValueError(f"{leaf} must have shape {shown} as the cell's init makes it, got {g}")
    if x_shape is None:
        return
    i = bad[0]
    leaf, g = f"params{jax.tree_util.keystr(got[i][0])}", np.shape(got[i][1])
    k = next(k for k, (a, b) in enumerate(zip(wants[i], wider[i])) if a != b)
    grown, rest = divmod(g[k] - wants[i][k], wider[i][k] - wants[i][k])  # shapes grow linearly with the input
    made_for = f" {n + grown}," if not rest and n + grown > 0 else ""
    raise ValueError(
        f"{x_name} must have last dimension{made_for} the input size of the params ({leaf} has shape {g}), "
        f"got shape {tuple(x_shape)}"
    )


def check_carry(initial_carry, carry, batch_shape, x_name: str = "x") -> None:
    """Refuses a `carry` that `initial_carry(batch_shape)` would not make (its pytree: TypeError; its
    shapes, e.g. another batch or hidden size: ValueError); `x_name` says where the batch shape is from."""
    want = _made_by_initial_carry(initial_carry, tuple(batch_shape))
    got, got_def = jax.tree_util.tree_flatten_with_path(carry)
    where = f"as the cell's initial_carry makes it for the batch shape {tuple(batch_shape)} of {x_name}"
    if got_def != jax.tree.structure(want):
        raise TypeError(f"carry must be {describe(want)} {where}, got {describe(carry)}")
    for (path, g), w in zip(got, jax.tree.leaves(want)):
        if np.shape(g) != w.shape:
            raise ValueError(f"carry{jax.tree_util.keystr(path)} must have shape {w.shape} {where}, got {np.shape(g)}")


def check_step(init, initial_carry, params, carry, x, *, projected: bool = False) -> None:
    """The arguments of `cell.apply(params, carry, x)`, or of `cell.step(params, carry, xp)` (`projected`:
    the width of `xp` is the cell's, not the input size)."""
    name = "xp" if projected else "x"
    shape = tuple(np.shape(x))
    if not shape:
        raise ValueError(f"{name} must be [*batch, features], got a scalar")
    check_params(init, params, None if projected else shape, name)
    check_carry(initial_carry, carry, shape[:-1], f"{name} of shape {shape}")


def layout(time_major: bool, last: str = "input") -> str:
    """`xs`'s axes in words, e.g. `[*batch, T, input]`; `last=""`: without the feature axis."""
    axes = ["T", "*batch"] if time_major else ["*batch", "T"]
    return f"[{', '.join(axes + [last] if last else axes)}]"


def check_sequence(init, initial_carry, params, xs, carry, time_major) -> tuple:
    """The arguments `unroll` and a bidirectional layer's `apply` share; returns the batch shape of `xs`."""
    check_bool(time_major, "time_major")
    if np.ndim(xs) < 2:
        raise ValueError(f"xs must be {layout(time_major, 'input_size')}, got shape {tuple(np.shape(xs))}")
    shape = tuple(np.shape(xs))
    name = f"xs {layout(time_major)}"
    check_params(init, params, shape, name)
    batch_shape = shape[1:-1] if time_major else shape[:-2]
    if carry is not None:
        check_carry(initial_carry, carry, batch_shape, f"{name} of shape {shape}")
    return batch_shape
