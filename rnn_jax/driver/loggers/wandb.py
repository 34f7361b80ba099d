"""The Weights & Biases tracker: a W&B run per job, offline unless `mode=online` (`logger=wandb`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rnn_jax.config_checks import check_choice
from rnn_jax.driver.loggers.naming import RunNames
from rnn_jax.driver.loggers.protocol import require
from rnn_jax.driver.loggers.records import record_metrics, resuming, status_of, summary_parts


@dataclass(frozen=True)
class WandbConfig:
    project: str = "rnn_jax"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled; offline needs no account and no network
    dir: Optional[str] = None  # None: the run directory (W&B writes <dir>/wandb/)


class WandbLogger:
    """A W&B run, offline unless `mode=online`: everything lands in `<dir>/wandb/offline-run-*/`,
    which `wandb sync <that dir>` uploads later. A run that continues its directory's history
    (`resuming`) continues the W&B run of its `wandb/latest-run` (offline, each attempt is its own folder with
    the same run id, and `wandb sync` joins them). Named by the job's overrides, grouped by the sweep's
    relative name; its config is the nested config (W&B shows `model.hidden`) with the code under `code`
    and, at the end, the summary's bookkeeping under `summary`; the results and throughput go to the
    W&B summary. W&B's own machine and code capture (paths, git, the program) is off: the code is
    recorded as rnn_jax records it."""

    MODES = ("offline", "online", "disabled")

    def __init__(self, cfg: WandbConfig, run_dir: Path, group: Optional[str], names: RunNames):
        check_choice("logger.wandb.mode", cfg.mode, self.MODES)
        self.wandb = require("logger.wandb", "wandb", "wandb")
        self.cfg, self.run_dir, self.names = cfg, run_dir, names
        self.run = None

    def start(self, config: dict, code: Optional[dict] = None) -> None:
        cfg = self.cfg
        directory = self.run_dir if cfg.dir is None else Path(cfg.dir).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        latest = self.run_dir / "wandb" / "latest-run"  # W&B's own link to the directory's last run
        earlier = None
        if cfg.dir is None and resuming(self.run_dir):
            earlier = next((p.stem.removeprefix("run-") for p in latest.glob("run-*.wandb")), None)
        settings = self.wandb.Settings(
            x_disable_meta=True, disable_git=True, save_code=False, x_save_requirements=False, program="rnn_jax.train"
        )
        self.run = self.wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=cfg.mode,
            dir=str(directory),
            group=self.names.group[-128:] if self.names.group else None,  # W&B's limit on a group name
            name=self.names.run,
            id=earlier,
            resume="allow" if earlier else None,
            config={**config, **({"code": code} if code else {})},
            settings=settings,
            reinit="create_new",  # sweep jobs in one process: each its own run
        )

    def log(self, record: dict) -> None:
        step, metrics = record_metrics(record)
        self.run.log(metrics, step=step)

    def files(self, paths: list[Path]) -> None:
        for path in paths:
            base = self.run_dir if Path(path).is_relative_to(self.run_dir) else Path(path).parent
            self.run.save(str(path), base_path=str(base), policy="now")

    def finish(self, summary: dict) -> None:
        parts = summary_parts(summary, self.run_dir)
        self.run.summary.update({**parts.results, **parts.throughput})
        self.run.config.update({"summary": parts.info}, allow_val_change=True)
        self.run.finish(exit_code={"ok": 0, "interrupted": 130}.get(status_of(summary), 1))
