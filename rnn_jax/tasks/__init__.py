"""The tasks, one folder each; `rnn_jax.tasks.registry.TASKS` names them (see `rnn_jax.tasks.base`)."""
