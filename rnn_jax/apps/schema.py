"""The app's config as Hydra composes it: the typed schemas in Hydra's ConfigStore, the resolvers
`conf/` uses, and `to_config`, the composed DictConfig as validated frozen dataclasses."""

from __future__ import annotations

import dataclasses
import os

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rnn_jax.apps import CONF_DIR
from rnn_jax.build import MODEL_CONFIGS
from rnn_jax.config_checks import ConfigError
from rnn_jax.driver.config import Config, validate
from rnn_jax.driver.optim import OPTIM_CONFIGS
from rnn_jax.tasks.registry import TASKS


def schema_node(schema) -> DictConfig:
    """`schema` as a node for Hydra's ConfigStore. The dataclasses are frozen (nothing downstream
    may write into the config); OmegaConf would mark their nodes read-only, which forbids Hydra's
    own merging of `conf/` and the overrides, so only the node's flag is lifted."""
    node = OmegaConf.structured(schema)

    def writable(n: DictConfig):
        n._set_flag("readonly", None)
        for key in n.keys():
            child = n._get_node(key)
            if isinstance(child, DictConfig):
                writable(child)

    writable(node)
    return node


def register_configs() -> None:
    """The schema in Hydra's ConfigStore: `config_schema`, and `<name>_schema` in the task, model
    and optim groups, so each section holds only the keys of the task, cell and optimizer chosen."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=schema_node(Config(model=None, optim=None)))
    groups = {
        "task": {name: spec.config for name, spec in TASKS.items()},
        "model": MODEL_CONFIGS,
        "optim": OPTIM_CONFIGS,
    }
    for group, schemas in groups.items():
        for name, schema in schemas.items():
            cs.store(group=group, name=f"{name}_schema", node=schema_node(schema))


def _conf_choices(group: str) -> str:
    """The options of a config group, from its folder in conf/ (the help text lists them)."""
    return ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


register_configs()
if not OmegaConf.has_resolver("rnn_jax_choices"):
    OmegaConf.register_new_resolver("rnn_jax_choices", _conf_choices)
    OmegaConf.register_new_resolver("rnn_jax_pid", lambda: os.getpid())  # run directories unique per process


def to_config(dcfg: DictConfig) -> Config:
    """The composed DictConfig as the typed, frozen dataclasses, validated."""
    _reject_unknown_keys(dcfg)
    return validate(OmegaConf.to_object(dcfg))


def _reject_unknown_keys(node: DictConfig, path: str = "") -> None:
    """`+model.hiden=4` adds a key that the schema lacks (Hydra's `+` opens the struct); refuse it
    rather than run with the key silently ignored."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        if key not in fields:
            raise ConfigError(
                f"{path}{key}",
                node[key],
                f"{path.rstrip('.') or 'the config'} has no key {key!r}; its keys: {', '.join(fields)}",
            )
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _reject_unknown_keys(child, f"{path}{key}.")
