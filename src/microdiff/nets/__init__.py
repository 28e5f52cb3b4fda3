"""Networks. They know nothing about diffusion: tensors in, tensors out."""

from .unet import UNet, UNetSpec

__all__ = ["UNet", "UNetSpec"]
