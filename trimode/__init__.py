"""trimode: one checkpoint, three ways to decode (autoregressive, block diffusion, self-speculation)."""

__version__ = "0.1.0"
