"""What a tracker is to the driver: the `Logger` protocol (start, log, files, finish), `Guarded`, which
turns a tracker's failure after the start into one warning, and the error for a tracker whose package
is missing."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Optional, Protocol

from rnn_jax.config_checks import ConfigError

log = logging.getLogger("rnn_jax")

INSTALL = "pip install -e '.[tracking]'"


class Logger(Protocol):
    def start(self, config: dict, code: Optional[dict] = None) -> None: ...

    def log(self, record: dict) -> None: ...

    def files(self, paths: list[Path]) -> None: ...

    def finish(self, summary: dict) -> None: ...


class MissingPackage(ConfigError):
    """A tracker whose package is not installed."""

    def __init__(self, key: str, package: str):
        ValueError.__init__(self, f"{key}: needs the {package} package: {INSTALL}")
        self.key = key


def require(key: str, module: str, package: str):
    """`module`, imported now; `MissingPackage` naming `key` and the extra when it is absent."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackage(key, package) from e


class Guarded:
    """A logger whose failures after `start` warn once and end its tracking; training goes on."""

    def __init__(self, name: str, logger):
        self.name, self.logger, self.broken = name, logger, False

    def start(self, config: dict, code: Optional[dict] = None) -> None:
        self.logger.start(config, code)

    def _call(self, method: str, arg) -> None:
        if self.broken:
            return
        try:
            getattr(self.logger, method)(arg)
        except Exception as e:  # noqa: BLE001 - a tracker's failure must not end the training
            self.broken = True
            log.warning(
                "logger.%s failed (%s: %s); it stops for this run, metrics.jsonl goes on",
                self.name,
                type(e).__name__,
                e,
            )

    def log(self, record: dict) -> None:
        self._call("log", record)

    def files(self, paths: list[Path]) -> None:
        self._call("files", paths)

    def finish(self, summary: dict) -> None:
        self._call("finish", summary)
