"""Several processes, one run: `jax.distributed` started from the `backend.distributed` config.

`mode=auto` starts it when the environment names a cluster (a SLURM step under `srun`, as the
submitit launcher runs its tasks; Open MPI's `mpirun`; `JAX_COORDINATOR_ADDRESS`), and does
nothing on a single machine; a `coordinator` (`HOST:PORT`) with `num_processes` and `process_id`
starts it explicitly under any launcher. Then every process sees every device of the run, feeds
only its own devices' part of each batch, and only process 0 writes the run's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import jax

from rnn_jax.tasks.base import ConfigError

MODES = ("auto", "on", "off")
_SLURM_STEP = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@dataclass(frozen=True)
class DistributedConfig:
    mode: str = "auto"  # auto: start when the environment names a cluster; on: always; off: never
    coordinator: Optional[str] = None  # HOST:PORT of process 0; None: found from the cluster's environment
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


def cluster_environment() -> bool:
    """Whether the environment names a cluster that `jax.distributed.initialize()` can read."""
    env = os.environ
    slurm = all(v in env for v in _SLURM_STEP) and int(env.get("SLURM_NTASKS", "1")) > 1
    return slurm or "OMPI_MCA_orte_hnp_uri" in env or "JAX_COORDINATOR_ADDRESS" in env


_started = False


def initialize(cfg: DistributedConfig) -> bool:
    """Starts `jax.distributed` as `cfg` says (before any computation); True when it runs."""
    global _started
    if _started:
        return True
    explicit = cfg.coordinator is not None
    if cfg.mode == "off" or (cfg.mode == "auto" and not explicit and not cluster_environment()):
        return False
    if explicit and (cfg.num_processes is None or cfg.process_id is None):
        raise ConfigError("backend.distributed.coordinator", cfg.coordinator, "needs backend.distributed.num_processes and backend.distributed.process_id too")
    kwargs = dict(coordinator_address=cfg.coordinator, num_processes=cfg.num_processes, process_id=cfg.process_id) if explicit else {}
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=120)
    except (ValueError, RuntimeError) as e:
        raise ConfigError("backend.distributed.mode", cfg.mode, f"jax.distributed did not start: {e}") from None
    _started = True
    return True


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0 of the run)."""
    return jax.process_index() == 0
