"""Config errors and the checks that raise them: one line naming the key and what is allowed.

The lowest module of the driver's side: the driver, the tasks and the apps all check their
settings with these, and it imports nothing of rnn_jax.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A config value out of range; the message names the key and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key}={value!r} is not allowed; {allowed}")
        self.key = key


def check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, value, "allowed: " + ", ".join(map(str, allowed)))


def check_at_least(key: str, value, low) -> None:
    if not value >= low:
        raise ConfigError(key, value, f"must be >= {low}")


def check_positive(key: str, value) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(key, value, "must be a finite number > 0")


def check_fraction(key: str, value, *, closed_low: bool = False) -> None:
    if not ((0 <= value if closed_low else 0 < value) and value < 1):
        raise ConfigError(key, value, f"must be in {'[' if closed_low else '('}0, 1)")
