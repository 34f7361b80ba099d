"""`hydra/launcher=fused`: a sweep's jobs trained as one program per shape family.

Every job is first composed and checked in its own directory (Hydra's `run_job`, which writes
`.hydra/` as the basic launcher does; a refused config fails that job alone). Addition jobs that
share a `rnn_jax.driver.job_groups.family` and start fresh then train together
(`train_family`); each job's outcome is then recorded in its own directory and Hydra context
(`rnn_jax.apps.train.conclude`). A job that belongs to no family of two or more, or resumes a
checkpoint, runs exactly as under the basic launcher.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


def _prepare(dcfg: DictConfig):
    """A job's config, checked, and its directory (in the job's Hydra context); a refused job's
    failure is recorded in its own directory as the basic launcher's job records it (NaN)."""
    from rnn_jax.apps.errors import job_failed
    from rnn_jax.apps.schema import to_config
    from rnn_jax.driver.config import validate

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = to_config(dcfg)
        validate(cfg)
    except Exception as e:  # noqa: BLE001 - the job fails alone, the sweep goes on
        return job_failed(e, dcfg, run_dir, sweeping=True)
    return cfg, run_dir


def _prepared(ret) -> bool:
    return ret.status == JobStatus.COMPLETED and isinstance(ret.return_value, tuple)


def split_by_padding(members: list[int], size: dict, max_padding: float) -> list[list[int]]:
    """`members` (jobs of one family) in groups that train as one program: by `size` (a hidden
    size, a sequence length), a group's largest at most `max_padding` times its smallest (on a
    CPU, padded units and steps cost as much as real ones; on an accelerator they are nearly free)."""
    groups: list[list[int]] = []
    for i in sorted(members, key=lambda i: size.get(i, 0)):
        if groups and size.get(i, 0) <= max_padding * size.get(groups[-1][0], 0):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def launch(
    hydra_context,
    task_function,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    first: int,
    max_padding: float = float("inf"),
    max_length_padding: float = float("inf"),
):
    """Hydra's `Launcher.launch`: the jobs' `JobReturn`s in the order of `job_overrides`."""
    from rnn_jax.apps.train import conclude, exit_interrupted
    from rnn_jax.driver.failures import stop_on_sigterm
    from rnn_jax.driver.job_groups import family, train_family
    from rnn_jax.tasks.addition.data import sequence_length

    def run_in_job_dir(task, sweep_config):  # `task` in the job's own Hydra context, as the basic launcher runs it
        return run_job(
            hydra_context=hydra_context,
            task_function=task,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    setup_globals()
    stop_on_sigterm()  # SIGTERM (a scheduler's) ends a family as Ctrl-C does
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    sweep_configs, prepared = [], []
    for idx, overrides in enumerate(job_overrides, start=first):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = sweep_config.hydra.job.num = idx
        sweep_configs.append(sweep_config)
        prepared.append(run_in_job_dir(_prepare, sweep_config))
    families: dict[str, list[int]] = {}
    hidden: dict[int, int] = {}  # of the jobs that belong to a family
    length: dict[int, int] = {}
    for i, ret in enumerate(prepared):
        if _prepared(ret):
            cfg, run_dir = ret.return_value
            fresh = not (run_dir / "checkpoints" / "last").exists()
            key = family(cfg) if fresh else None
            families.setdefault(key if key is not None else f"alone {i}", []).append(i)
            if key is not None:
                hidden[i] = cfg.model.hidden
                length[i] = sequence_length(cfg.task.bits, cfg.task.full_range)
    groups = [
        group
        for members in families.values()
        for by_hidden in split_by_padding(members, hidden, max_padding)
        for group in split_by_padding(by_hidden, length, max_length_padding)
    ]
    results: dict[int, Any] = {}
    for members in groups:
        if len(members) == 1:
            continue
        print(f"fused: training jobs {', '.join(str(first + i) for i in members)} as one program", file=sys.stderr)
        try:
            summaries = train_family(
                [prepared[i].return_value[0] for i in members], [prepared[i].return_value[1] for i in members]
            )
            results.update(zip(members, summaries))
        except KeyboardInterrupt:  # each job of the family saved its last logged step; a rerun resumes them
            exit_interrupted(config.hydra.sweep.dir)
        except Exception as e:  # noqa: BLE001 - the family's jobs fail, the sweep goes on
            results.update((i, e) for i in members)
    runs = []
    for i, sweep_config in enumerate(sweep_configs):
        if not _prepared(prepared[i]):
            runs.append(prepared[i])  # refused: its failure is already recorded
            continue
        if i in results:
            outcome = results[i]
            task = lambda dcfg, outcome=outcome: conclude(outcome, dcfg)
        else:
            task = task_function  # alone, as the basic launcher runs it
        runs.append(run_in_job_dir(task, sweep_config))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return runs
