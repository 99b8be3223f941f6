"""The configuration: every key a user sets, declared once (schema.py), and the resolvers the YAML files use, which
importing this package registers with OmegaConf (Hydra needs them before it composes the files)."""

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from mnist_lstm.config.schema import keys_help


def sweep_run_name() -> str:
    """`${sweep_run_name:}` in conf/logger/tensorboard.yaml: in a multirun the job's overrides (`hidden_size=64,
    layer_num=2`), so TensorBoard tells the jobs apart; in a single run "" (its events stay in <run>/tensorboard/)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    # A value holding a path must not turn into sub-directories (or an absolute path); names stay < 255 bytes.
    return HydraConfig.get().job.override_dirname.replace(os.sep, "_")[:200]


# `${keys_help:train}`: a script's --help, from schema.py
for _name, _resolver in {"sweep_run_name": sweep_run_name, "keys_help": keys_help}.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
