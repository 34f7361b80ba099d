"""Distributed start-up: the processes of a run meet in Python (`rendezvous`) before JAX's own
start-up, so a missing or mismatched peer ends in one line and a failed summary, within
`backend.distributed.timeout`, never in JAX's C++ abort; a malformed coordinator is refused at
the config check. Everything on 127.0.0.1 with timeouts of 1-2 s, and no `jax.distributed`."""

import json
import socket
import threading

import pytest

from rnn_jax.driver.distributed import DistributedConfig, DistributedError, check, rendezvous
from rnn_jax.tasks.base import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def meet(coordinator, *processes, timeout=2.0):
    """`rendezvous` of each (num_processes, process_id) in its own thread, all at once; what each
    returned (None) or raised, in order."""
    results = [None] * len(processes)

    def one(i, n, pid):
        try:
            results[i] = rendezvous(coordinator, n, pid, timeout)
        except DistributedError as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i, *p)) for i, p in enumerate(processes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    assert not any(t.is_alive() for t in threads), "a process still waits past the timeout"
    return results


def test_all_processes_meet_and_the_port_is_free_again_for_jax():
    coordinator = f"127.0.0.1:{free_port()}"
    assert meet(coordinator, (3, 2), (3, 0), (3, 1)) == [None, None, None]
    host, port = coordinator.split(":")
    with socket.create_server(("", int(port))):  # what jax.distributed's coordination service binds next
        pass


def test_missing_and_mismatched_peers_end_in_an_error_on_every_side():
    coordinator = f"127.0.0.1:{free_port()}"
    zero, one = meet(coordinator, (3, 0), (3, 1), timeout=1)  # process 2 never comes
    assert str(zero) == str(one) == f"2 of 3 processes joined within 1 s at {coordinator}"
    zero, one = meet(coordinator, (2, 0), (3, 1), timeout=1)
    assert str(zero) == str(one) == "process 1 has num_processes=3, process 0 has 2"
    (alone,) = meet(coordinator, (2, 1), timeout=1)
    assert str(alone) == f"process 1 of 2 found no process 0 at {coordinator} within 1 s"
    port = int(coordinator.split(":")[1])
    with socket.create_server(("", port)):  # the port taken by another program
        (taken,) = meet(coordinator, (2, 0), timeout=1)
    assert str(taken).startswith(f"process 0 cannot listen on port {port} of backend.distributed.coordinator=")


MALFORMED = ["notahostport", "127.0.0.1:", ":12355", "127.0.0.1:0", "127.0.0.1:70000", "host:port"]


@pytest.mark.parametrize("coordinator", MALFORMED)
def test_a_malformed_coordinator_is_refused_naming_the_key_and_the_form(coordinator):
    with pytest.raises(ConfigError, match="backend.distributed.coordinator=.* the form is HOST:PORT"):
        check(DistributedConfig(coordinator=coordinator, num_processes=2, process_id=0))


def test_coordinator_forms_that_are_allowed_and_other_bad_values():
    for coordinator in ("127.0.0.1:12355", "node-3.cluster:80", "[::1]:12355"):
        check(DistributedConfig(coordinator=coordinator, num_processes=2, process_id=1))
    with pytest.raises(ConfigError, match="backend.distributed.timeout=0 is not allowed; must be >= 1"):
        check(DistributedConfig(timeout=0))
    with pytest.raises(ConfigError, match="process_id=2 is not allowed; must be < backend.distributed.num_processes=2"):
        check(DistributedConfig(coordinator="127.0.0.1:12355", num_processes=2, process_id=2))
    with pytest.raises(ConfigError, match="needs backend.distributed.num_processes and backend.distributed.process_id"):
        check(DistributedConfig(coordinator="127.0.0.1:12355"))


def test_a_run_whose_peer_never_comes_ends_in_one_line_and_a_failed_summary(tmp_path, app_in_process):
    port = free_port()
    args = ["backend.distributed.num_processes=2", "backend.distributed.process_id=0", "backend.distributed.timeout=2"]
    out = app_in_process(*args, f"backend.distributed.coordinator=127.0.0.1:{port}", f"hydra.run.dir={tmp_path}")
    message = f"1 of 2 processes joined within 2 s at 127.0.0.1:{port}"
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"error: {message}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == f"DistributedError: {message}"
    # A malformed coordinator, into the same directory: its summary replaces the failed start's.
    out = app_in_process(*args, "backend.distributed.coordinator=notahostport", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    refusal = "error: backend.distributed.coordinator='notahostport' is not allowed; the form is HOST:PORT"
    assert out.stderr.strip().splitlines()[-1].startswith(refusal)
    assert "HOST:PORT" in json.loads((tmp_path / "summary.json").read_text())["error"]
