"""`python -m rnn_jax.train`: the training app; the app lives in `rnn_jax.apps.train`."""

from rnn_jax.apps.train import main

if __name__ == "__main__":
    main()
