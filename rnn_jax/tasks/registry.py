"""The task registry: one line per task. A task is a folder of `rnn_jax/tasks/` with its config
dataclass, its checks and its `make(cfg, optimizer, devices) -> Task` (see `rnn_jax.tasks.base`),
plus `conf/task/<name>.yaml`."""

from rnn_jax.tasks.addition.task import SPEC as ADDITION
from rnn_jax.tasks.base import Task, TaskSpec
from rnn_jax.tasks.charlm.task import SPEC as CHARLM
from rnn_jax.tasks.lstm2014.task import SPEC as LSTM2014

TASKS: dict[str, TaskSpec] = {"addition": ADDITION, "charlm": CHARLM, "lstm2014": LSTM2014}

__all__ = ["TASKS", "Task", "TaskSpec"]
