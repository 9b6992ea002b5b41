"""imagegen: autoregressive image generation (PixelCNN, PixelRNN, Image Transformer)."""

__version__ = "0.1.0"
