"""rnn_jax's Hydra launcher plugin (`hydra/launcher=fused`)."""
