"""Data: TFDS pipelines, the embedded `digits` dataset and per-example augmentations.

Importing this package registers the embedded datasets with TFDS (`tfds.load('digits')`).
"""

from jaxlab.data import digits  # Registers the `digits` TFDS builder.
from jaxlab.data.config import check_augmentation_config
from jaxlab.data.config import default_dataset_config
from jaxlab.data.pipeline import DataError
from jaxlab.data.pipeline import DatasetInfo
from jaxlab.data.pipeline import available_datasets
from jaxlab.data.pipeline import check_dataset_name
from jaxlab.data.pipeline import dataset_info
from jaxlab.data.pipeline import eval_batches
from jaxlab.data.pipeline import train_batches

__all__ = [
    'DataError',
    'DatasetInfo',
    'check_augmentation_config',
    'available_datasets',
    'check_dataset_name',
    'dataset_info',
    'default_dataset_config',
    'eval_batches',
    'train_batches',
]
