"""`python -m rnn_jax.verify`: proofs and counterexamples for addition runs; the app lives in `rnn_jax.apps.verify`."""

from rnn_jax.apps.verify import main

if __name__ == "__main__":
    raise SystemExit(main())
