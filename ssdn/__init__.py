"""ssdn: self-supervised deep image denoising (Laine, Karras, Lehtinen, Aila; NeurIPS 2019)."""

__version__ = "0.1.0"
