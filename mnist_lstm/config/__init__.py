"""The configuration: every key a user sets declared once (schema.py), the YAML files' resolvers (resolvers.py)
and the keys earlier versions spelled otherwise (renamed.py). Importing this package registers the resolvers with
OmegaConf, which the YAML files need before Hydra composes them."""

from mnist_lstm.config import resolvers  # noqa: F401  (registered on import)
