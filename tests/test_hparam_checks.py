"""Model constructors refuse hparams they cannot be built or run with (ValueError, which
``training.make_model`` and ``checkpoint.load`` turn into one-line errors)."""

from __future__ import annotations

import pytest

from imagegen.models import build_model

SMALL = dict(channels=1, image_size=8)


@pytest.mark.parametrize("name, hparams, says", [
    ("gated_pixelcnn", {"kernel_size": 4}, "kernel_size must be odd"),
    ("gated_pixelcnn", {"first_kernel_size": 6}, "first_kernel_size must be odd"),
    ("pixelcnn", {"kernel_size": 2}, "kernel_size must be odd"),
    ("row_lstm", {"kernel_size": 4}, "kernel_size must be odd"),
    ("diagonal_bilstm", {"first_kernel_size": 0}, "first_kernel_size must be an integer >= 1"),
    ("gated_pixelcnn", {"channels": 0}, "channels must be an integer >= 1"),
    ("gated_pixelcnn", {"image_size": 0}, "height must be an integer >= 1"),
    ("gated_pixelcnn", {"image_size": [8, 8, 8]}, r"image_size must be an integer or \[height, width\]"),
    ("gated_pixelcnn", {"levels": 1000}, "levels must be between 2 and 256"),
    ("gated_pixelcnn", {"levels": 1}, "levels must be between 2 and 256"),
    ("gated_pixelcnn", {"num_classes": 0}, "num_classes must be an integer >= 1"),
    ("gated_pixelcnn", {"hidden": 0}, "hidden must be an integer >= 1"),
    ("gated_pixelcnn", {"hidden": "eight"}, "hidden must be an integer >= 1"),
    ("gated_pixelcnn", {"num_layers": 2.5}, "num_layers must be an integer >= 1"),
    ("gated_pixelcnn_sr", {"upscale_factor": 0}, "upscale_factor must be an integer >= 1"),
    ("pixelcnn", {"out_hidden": -1}, "out_hidden must be an integer >= 1"),
    ("dilated_pixelcnn", {"dilation_cycle": 0}, "dilation_cycle must be an integer >= 1"),
    ("dilated_pixelcnn", {"channels": 3, "hidden": 8}, "must be a multiple of channels"),
    ("transformer_1d", {"num_heads": 0}, "num_heads must be an integer >= 1"),
    ("transformer_1d", {"memory_length": -1}, "memory_length must be an integer >= 0"),
    ("transformer_1d", {"dropout": 1.0}, "dropout must be a number >= 0 and < 1"),
    ("transformer_2d", {"query_shape": [2.5, 4]}, "query_shape must be two integers"),
    ("transformer_sr_1d", {"upscale_factor": 2.5}, "upscale_factor must be an integer >= 1"),
])
def test_bad_hparams_raise_value_error(name, hparams, says):
    with pytest.raises(ValueError, match=says):
        build_model(name, **{**SMALL, **hparams})
