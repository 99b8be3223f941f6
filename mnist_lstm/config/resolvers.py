"""The resolvers the YAML files use, registered when mnist_lstm.config is imported."""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from mnist_lstm.config.schema import keys_help


def sweep_run_name() -> str:
    """`${sweep_run_name:}` in conf/logger/tensorboard.yaml: in a multirun the job's overrides
    (`hydra.job.override_dirname`, e.g. `hidden_size=64,layer_num=2`), so TensorBoard tells the jobs
    apart; in a single run "" (its events stay in `<run>/tensorboard/`)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    # A value holding a path must not turn into sub-directories (or an absolute path); names stay < 255 bytes.
    return HydraConfig.get().job.override_dirname.replace(os.sep, "_")[:200]


RESOLVERS = {
    "sweep_run_name": sweep_run_name,
    "keys_help": keys_help,  # `${keys_help:train}`: a script's --help, from mnist_lstm/config/schema.py
}
for _name, _resolver in RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
