"""`python -m rnn_jax.bench`: the cell benchmark against Flax and PyTorch; the app lives in `rnn_jax.apps.bench`."""

from rnn_jax.apps.bench import main

if __name__ == "__main__":
    main()
