"""Dataset readers: MNIST, binarized MNIST, CIFAR-10, downsampled ImageNet, CelebA and folders of images.

Every reader returns an `ImageData` holding uint8 images (N, C, H, W) and int64 labels (N,) or None;
`DATASETS` (the registry) says each dataset's shape, classes, splits, files and download:

    from imagegen.data import load_dataset
    data = load_dataset("cifar10", "/data/cifar-10-batches-py", "test")
    data.images.shape  # (10000, 3, 32, 32)
"""

from imagegen.errors import DataError

from .dataset import ImageData
from .load import load_dataset
from .registry import DATASETS, Dataset, available_datasets, data_root, dataset, default_root
from .transforms import binarize

__all__ = ["DATASETS", "DataError", "Dataset", "ImageData", "available_datasets", "binarize", "data_root",
           "dataset", "default_root", "load_dataset"]
