"""Several processes, one run: `jax.distributed` started from the `backend.distributed` config.

`mode=auto` starts it when the environment names a cluster (a SLURM step under `srun`, as the
submitit launcher runs its tasks; Open MPI's `mpirun`; `JAX_COORDINATOR_ADDRESS`), and does
nothing on a single machine; a `coordinator` (`HOST:PORT`) with `num_processes` and `process_id`
starts it explicitly under any launcher. Then every process sees every device of the run, feeds
only its own devices' part of each batch, and only process 0 writes the run's files.

JAX ends a process whose peers do not all register in time with a C++ abort (no Python error,
so no record and no message). An explicit start therefore first meets its peers in Python
(`rendezvous`): process 0 listens on the coordinator's port, the others connect and say who they
are, and only when all have come within `timeout` seconds do they start `jax.distributed`;
otherwise each ends with `DistributedError` naming how many came.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Optional

import jax

from rnn_jax.config_checks import ConfigError, check_at_least, check_choice
from rnn_jax.driver.backend import BackendError

MODES = ("auto", "on", "off")
_SLURM_STEP = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
COORDINATOR = "backend.distributed.coordinator"
_HELLO = "rnn_jax-rendezvous"  # the first word of a peer's line: a stray connection is told apart


@dataclass(frozen=True)
class DistributedConfig:
    mode: str = "auto"  # auto: start when the environment names a cluster; on: always; off: never
    coordinator: Optional[str] = None  # HOST:PORT of process 0; None: found from the cluster's environment
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    timeout: int = 60  # seconds to wait for every process to join before giving up with an error


class DistributedError(BackendError):
    """The processes of a run did not all meet (a peer missing, the port taken, a peer of another run)."""


def host_port(coordinator: str) -> tuple[str, int]:
    """`HOST:PORT` (`[V6ADDR]:PORT` for an IPv6 address) as (host, port); ValueError when malformed."""
    host, sep, port = coordinator.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(coordinator)
    return host, int(port)


def check(cfg: DistributedConfig) -> None:
    """Raises `ConfigError` naming the first bad `backend.distributed` key."""
    check_choice("backend.distributed.mode", cfg.mode, MODES)
    check_at_least("backend.distributed.timeout", cfg.timeout, 1)
    if cfg.num_processes is not None:
        check_at_least("backend.distributed.num_processes", cfg.num_processes, 1)
    if cfg.process_id is not None:
        check_at_least("backend.distributed.process_id", cfg.process_id, 0)
    if cfg.coordinator is None:
        return
    try:
        host_port(str(cfg.coordinator))
    except ValueError:
        form = "the form is HOST:PORT, e.g. 127.0.0.1:12355 (PORT 1-65535)"
        raise ConfigError(COORDINATOR, cfg.coordinator, form) from None
    if cfg.num_processes is None or cfg.process_id is None:
        needs = "needs backend.distributed.num_processes and backend.distributed.process_id too"
        raise ConfigError(COORDINATOR, cfg.coordinator, needs)
    if cfg.process_id >= cfg.num_processes:
        below = f"must be < backend.distributed.num_processes={cfg.num_processes}"
        raise ConfigError("backend.distributed.process_id", cfg.process_id, below)


def cluster_environment() -> bool:
    """Whether the environment names a cluster that `jax.distributed.initialize()` can read."""
    env = os.environ
    slurm = all(v in env for v in _SLURM_STEP) and int(env.get("SLURM_NTASKS", "1")) > 1
    return slurm or "OMPI_MCA_orte_hnp_uri" in env or "JAX_COORDINATOR_ADDRESS" in env


_started = False


def initialize(cfg: DistributedConfig) -> bool:
    """Starts `jax.distributed` as `cfg` says (before any computation); True when it runs.

    With a named coordinator the processes first meet in `rendezvous`, bounded by `cfg.timeout`.
    A start from a cluster's environment goes to JAX directly, bounded by the same timeout."""
    global _started
    if _started:
        return True
    check(cfg)
    explicit = cfg.coordinator is not None
    if cfg.mode == "off" or (cfg.mode == "auto" and not explicit and not cluster_environment()):
        return False
    kwargs = {}
    if explicit:
        rendezvous(cfg.coordinator, cfg.num_processes, cfg.process_id, cfg.timeout)
        kwargs = dict(coordinator_address=cfg.coordinator, num_processes=cfg.num_processes, process_id=cfg.process_id)
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=cfg.timeout)
    except (ValueError, RuntimeError) as e:
        raise ConfigError("backend.distributed.mode", cfg.mode, f"jax.distributed did not start: {e}") from None
    _started = True
    return True


def rendezvous(coordinator: str, num_processes: int, process_id: int, timeout: float) -> None:
    """Returns once all `num_processes` processes have reached `coordinator` (process 0 listens on
    its port, the others connect), or raises `DistributedError`: process 0 after `timeout`
    seconds, the others when process 0 says so or, finding none, after `timeout` seconds.

    The port is free again when this returns, for the coordination service of `jax.distributed`."""
    deadline = time.monotonic() + timeout
    if num_processes == 1:
        return
    if process_id == 0:
        _gather(coordinator, num_processes, deadline, timeout)
    else:
        _join(coordinator, num_processes, process_id, deadline, timeout)


def _gather(coordinator: str, num_processes: int, deadline: float, timeout: float) -> None:
    """Process 0: accepts every other process's hello, then answers each `go` (or why not)."""
    _, port = host_port(coordinator)
    try:  # every address, as the coordination service of jax.distributed binds
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            server = socket.create_server(("", port))
    except OSError as e:
        where = f"port {port} of {COORDINATOR}={coordinator}"
        raise DistributedError(f"process 0 cannot listen on {where}: {e.strerror}") from None
    peers: dict[int, socket.socket] = {}
    problem = None
    try:
        while len(peers) < num_processes - 1 and problem is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            server.settimeout(remaining)
            try:
                conn, _ = server.accept()
            except TimeoutError:
                break
            words = _read_line(conn, deadline).split()
            if len(words) != 3 or words[0] != _HELLO or not (words[1] + words[2]).isdigit():
                conn.close()  # not one of ours (a port scanner, another program): keep waiting
                continue
            their_n, their_id = int(words[1]), int(words[2])
            if their_n != num_processes:
                problem = f"process {their_id} has num_processes={their_n}, process 0 has {num_processes}"
            elif their_id in peers:
                problem = f"two processes say process_id={their_id}"
            if problem:
                _send(conn, f"refused {problem}")
                conn.close()
            else:
                peers[their_id] = conn
        joined = 1 + len(peers)
        if problem is None and joined < num_processes:
            problem = f"{joined} of {num_processes} processes joined within {timeout:g} s at {coordinator}"
        for conn in peers.values():
            _send(conn, f"refused {problem}" if problem else "go")
    finally:
        for conn in peers.values():
            conn.close()
        server.close()
    if problem:
        raise DistributedError(problem)


def _join(coordinator: str, num_processes: int, process_id: int, deadline: float, timeout: float) -> None:
    """Process `process_id` > 0: connects to process 0 (retrying until it listens), says hello and
    waits for its answer."""
    host, port = host_port(coordinator)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            who = f"process {process_id} of {num_processes}"
            raise DistributedError(f"{who} found no process 0 at {coordinator} within {timeout:g} s")
        try:
            conn = socket.create_connection((host, port), timeout=min(remaining, 1.0))
            break
        except OSError as e:
            if isinstance(e, socket.gaierror):
                unknown = f"cannot resolve the host of {COORDINATOR}={coordinator}: {e.strerror}"
                raise DistributedError(unknown) from None
            time.sleep(min(0.1, max(remaining, 0)))
    with conn:
        _send(conn, f"{_HELLO} {num_processes} {process_id}")
        # Process 0 answers by its own deadline, which may come up to `timeout` after this one's
        # (it may have started later): wait that long for the answer, and a second more.
        answer = _read_line(conn, time.monotonic() + timeout + 1)
    if answer == "go":
        return
    if answer.startswith("refused "):
        raise DistributedError(answer[len("refused ") :])
    not_all = f"did not confirm that all {num_processes} processes joined within {timeout:g} s"
    raise DistributedError(f"process 0 at {coordinator} {not_all}")


def _send(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall((line + "\n").encode())
    except OSError:
        pass  # a peer that has gone will find out on its own


def _read_line(conn: socket.socket, deadline: float) -> str:
    """One line from `conn` read by `deadline`; "" when it closes or time runs out first."""
    data = b""
    try:
        while not data.endswith(b"\n") and len(data) < 256:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn.settimeout(remaining)
            chunk = conn.recv(256)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.decode(errors="replace").strip()


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0 of the run)."""
    return jax.process_index() == 0
