"""Argument checks shared by the factories: one clear message naming the argument."""

from __future__ import annotations

import jax.numpy as jnp


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
        raise ValueError(f"{name} must have last dimension {expected} (the input size the params were made for), got shape {tuple(x.shape)}")


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
