"""The data stage: a `data` config section in, labelled tf.data pipelines out."""

from transferctl.data.bundle import DataBundle, Examples, load_data

__all__ = ["DataBundle", "Examples", "load_data"]
