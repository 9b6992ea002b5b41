"""Dataset readers: MNIST, binarized MNIST, CIFAR-10, downsampled ImageNet and folders of images.

Every reader returns an `ImageData` holding uint8 images (N, C, H, W) and int64 labels (N,) or None:

    from imagegen.data import load_dataset
    data = load_dataset("cifar10", "/data/cifar-10-batches-py", "test")
    data.images.shape  # (10000, 3, 32, 32)
"""

from imagegen.errors import DataError

from .dataset import ImageData
from .load import available_datasets, default_root, load_dataset
from .transforms import binarize

__all__ = ["DataError", "ImageData", "available_datasets", "binarize", "default_root", "load_dataset"]
