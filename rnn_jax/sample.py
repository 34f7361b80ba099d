"""`python -m rnn_jax.sample`: sampling from a char-LM checkpoint; the app lives in `rnn_jax.apps.sample`."""

from rnn_jax.apps.sample import main

if __name__ == "__main__":
    raise SystemExit(main())
