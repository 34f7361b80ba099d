"""Run-directory bookkeeping: interrupts held over a bookkeeping block, strict JSON lines, fresh directories."""

import json
import os
import signal
import threading

import pytest

from rnn_jax.driver.rundir import MetricsLog, interrupts_deferred, read_jsonl


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_the_block_waits_for_its_end(signum):
    done = []

    def handler(received, frame):
        done.append(f"handler {received}")
        raise KeyboardInterrupt

    previous = signal.signal(signum, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                os.kill(os.getpid(), signum)
                done.append("after the signal")
        assert done == ["after the signal", f"handler {int(signum)}"]
        assert signal.getsignal(signum) is handler  # the handler in place before the block is back
    finally:
        signal.signal(signum, previous)


def test_no_signal_no_interrupt_and_errors_pass_through():
    with interrupts_deferred():
        pass
    with pytest.raises(ZeroDivisionError):
        with interrupts_deferred():
            1 / 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_off_the_main_thread_it_does_nothing():
    errors = []

    def work():
        try:
            with interrupts_deferred():
                pass
        except Exception as e:  # noqa: BLE001 - signal.signal off the main thread would raise ValueError
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == []


def test_metrics_are_strict_json_and_a_cut_line_is_skipped(tmp_path):
    log = MetricsLog(tmp_path)
    log.write({"step": 1, "loss": float("nan"), "per_seed": {"loss": [1.5, float("inf")]}})
    log.write({"step": 2, "loss": 0.5})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # a crash in the middle of a line
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert list(read_jsonl(tmp_path / "metrics.jsonl")) == [
        {"step": 1, "loss": None, "per_seed": {"loss": [1.5, None]}},
        {"step": 2, "loss": 0.5},
    ]
