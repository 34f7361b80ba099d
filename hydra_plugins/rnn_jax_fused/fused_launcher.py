"""Hydra's entry to rnn_jax's fused launcher (`hydra/launcher=fused`, `conf/hydra/launcher/fused.yaml`).

Hydra accepts launchers only from the `hydra_plugins` package and imports every module there at
start-up, so this module stays light: the work is in `rnn_jax.apps.fused_launcher`."""

from typing import Any, Optional, Sequence

from hydra.plugins.launcher import Launcher


def padding_ratio(key: str, value: Any) -> float:
    """A padding limit: a number >= 1 (`inf`: none); else the one-line error the app prints."""
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        ratio = float("nan")
    if not ratio >= 1:
        raise ValueError(f"hydra.launcher.{key}={value} is not allowed; must be a number >= 1 (inf: no limit)")
    return ratio


class FusedLauncher(Launcher):
    """Trains a sweep's addition jobs of one shape family as one program; the rest one by one."""

    def __init__(self, max_padding: float = float("inf"), max_length_padding: float = float("inf")) -> None:
        super().__init__()
        self.max_padding = padding_ratio("max_padding", max_padding)
        self.max_length_padding = padding_ratio("max_length_padding", max_length_padding)
        self.config: Optional[Any] = None
        self.task_function: Optional[Any] = None
        self.hydra_context: Optional[Any] = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        from rnn_jax.apps.fused_launcher import launch

        return launch(
            self.hydra_context,
            self.task_function,
            self.config,
            job_overrides,
            initial_job_idx,
            self.max_padding,
            self.max_length_padding,
        )
