"""Inference on a user's images: tiled denoising."""
