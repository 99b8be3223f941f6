"""The configuration: every knob declared once (schema.py), the checks derived from it (checks.py), the YAML
files' resolvers (resolvers.py) and the keys earlier versions spelled otherwise (renamed.py). Importing this
package registers the schemas and the resolvers with Hydra."""

from mnist_lstm.config import resolvers, schema  # noqa: F401  (registered on import)
