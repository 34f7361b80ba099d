"""The TensorBoard tracker: event files written with TensorBoard's own writer, one TensorBoard run per
job (`logger=tensorboard`)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rnn_jax.driver.loggers.naming import RunNames, dir_name
from rnn_jax.driver.loggers.protocol import require
from rnn_jax.driver.loggers.records import (
    hyperparameters,
    record_metrics,
    resuming,
    sample_step,
    status_of,
    summary_parts,
)


@dataclass(frozen=True)
class TensorBoardConfig:
    dir: Optional[str] = None  # None: <sweep or run dir>/tensorboard/<job>; else <dir>/<sweep or run dir name>/<job>


class TensorBoardLogger:
    """Event files written with TensorBoard's own writer and summary protos (no TensorFlow, no
    PyTorch): the `EventFileWriter` that `torch.utils.tensorboard` writes through, scalars as
    `simple_value`, text and hparams as the text and HParams plugins' summaries.

    One TensorBoard run per job, in a folder named after the job (`RunNames.run`) under the root a
    user opens: `<sweep dir>/tensorboard/` in a sweep, `<run dir>/tensorboard/` alone, or
    `<logger.tensorboard.dir>/<sweep or run dir name>/`. Curves under their groups (`train/loss`,
    `val/bpc`, `perf/chars_per_sec`); the summary's results once as `results/*`, the only metrics
    the HParams table shows (its experiment config says so); the config and the code as HParams;
    samples, the summary and its bookkeeping as text. The first event this process writes carries
    TensorBoard's purge marker at its step, so a run resumed from a checkpoint hides what an
    earlier attempt logged after that checkpoint."""

    def __init__(self, cfg: TensorBoardConfig, run_dir: Path, group: Optional[str], names: RunNames):
        require("logger.tensorboard", "tensorboard.summary.writer.event_file_writer", "tensorboard")
        if cfg.dir is not None:
            root = Path(cfg.dir).expanduser() / dir_name(Path(group or run_dir).name)
            trial = f"{Path(group or run_dir).name}/{names.run}"
        else:
            root, trial = (Path(group) if group else run_dir) / "tensorboard", names.run
        self.dir = root / dir_name(names.run)
        if cfg.dir is None and not group and resuming(run_dir) and root.is_dir():
            earlier = [p for p in root.iterdir() if p.is_dir()]  # a rerun with other overrides continues its run
            self.dir = earlier[0] if len(earlier) == 1 else self.dir
        self.run_dir, self.trial, self.name = run_dir, trial, names.run
        self.writer = None
        self.hparams: dict[str, Any] = {}
        self.results: list[str] = []
        self.step = 0

    def _write(self, summary, step: int, purge: bool = True) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if self.writer is None:
            self.writer = EventFileWriter(str(self.dir), flush_secs=30)
            if purge:  # TensorBoard drops earlier events at or after this step
                self.writer.add_event(
                    Event(step=step, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START))
                )
            start = hparams_pb(self.hparams, trial_id=self.trial)
            self.writer.add_event(Event(step=0, wall_time=time.time(), summary=start))
        self.writer.add_event(Event(step=step, wall_time=time.time(), summary=summary))

    def _scalars(self, values: dict[str, float], step: int, purge: bool = True) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write(Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()]), step, purge)

    def _text(self, tag: str, text: str, step: int, purge: bool = True) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        # indented: a Markdown code block, shown as written
        self._write(text_pb(tag, "\n".join("    " + line for line in text.splitlines())), step, purge)

    def _plugin_data(self, tag: str, data, step: int) -> None:
        """An HParams plugin record (the experiment's columns, a session's end) under `tag`."""
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import metadata

        value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
        self._write(Summary(value=[value]), step, purge=False)

    def start(self, config: dict, code: Optional[dict] = None) -> None:
        self.hparams = hyperparameters(config, code)

    def log(self, record: dict) -> None:
        self.step, metrics = record_metrics(record)
        self._scalars(metrics, self.step)
        self.writer.flush()

    def files(self, paths: list[Path]) -> None:
        for path in map(Path, paths):  # a sample is written before its step's record
            rel = path.relative_to(self.run_dir) if path.is_relative_to(self.run_dir) else Path(path.name)
            tag = rel.parent.as_posix() if rel.parent != Path(".") else rel.stem
            self._text(tag, path.read_text(encoding="utf-8", errors="replace"), sample_step(path, self.step))
        if self.writer is not None:
            self.writer.flush()

    def finish(self, summary: dict) -> None:
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        step = int(summary.get("steps", self.step))
        parts = summary_parts(summary, self.run_dir)
        # The HParams table's columns: the hyperparameters, those the job's name sets marked as differing (the
        # table shows those first), and the results, not every curve's last point.
        named = set(re.findall(r"(?:^|,)([A-Za-z_][\w.]*)=", self.name))
        experiment = api_pb2.Experiment(
            hparam_infos=[api_pb2.HParamInfo(name=k, differs=k in named) for k in self.hparams],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=k)) for k in parts.results],
        )
        self._plugin_data(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment), step)
        self._scalars(parts.results, step, purge=False)
        info = {**parts.info, **{k.partition("/")[2]: v for k, v in parts.throughput.items()}}
        self._text("summary", json.dumps(info, indent=1), step, purge=False)
        status = {"ok": api_pb2.STATUS_SUCCESS, "interrupted": api_pb2.STATUS_UNKNOWN}.get(
            status_of(summary), api_pb2.STATUS_FAILURE
        )
        end = plugin_data_pb2.HParamsPluginData(
            session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
        )
        self._plugin_data(metadata.SESSION_END_INFO_TAG, end, step)
        self.writer.close()
        self.writer = None
