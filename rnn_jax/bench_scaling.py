"""`python -m rnn_jax.bench_scaling`: seeds per second on 1, 2, 4 devices and two processes; the app lives in
`rnn_jax.apps.bench_scaling`."""

from rnn_jax.apps.bench_scaling import main

if __name__ == "__main__":
    main()
