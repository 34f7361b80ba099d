"""`python -m rnn_jax.bench_addition`: the 2015 replication against its numpy reference; the app lives in
`rnn_jax.apps.bench_addition`."""

from rnn_jax.apps.bench_addition import main

if __name__ == "__main__":
    main()
