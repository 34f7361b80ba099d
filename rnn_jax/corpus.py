"""`python -m rnn_jax.corpus NAME`: builds a poetry corpus; the app lives in `rnn_jax.apps.corpus`."""

from rnn_jax.apps.corpus import main

# the default corpus's modules, as the README names them
from rnn_jax.tasks.charlm.corpus import DEFAULT_MODULES  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
