"""`python -m rnn_jax.report`: the report of a sweep; the app lives in `rnn_jax.apps.report`."""

from rnn_jax.apps.report import main

if __name__ == "__main__":
    raise SystemExit(main())
