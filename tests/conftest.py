"""Tests run on the CPU, with strict rank promotion so silent broadcasting bugs fail loudly."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
