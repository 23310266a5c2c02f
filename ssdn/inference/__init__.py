"""Inference on a user's images: which level (levels), the network and posterior over tiles (denoiser, tiling),
which files in and out (plan), writing them as they came (write), and exported graphs (exported, export_formats).
The command lines are ``ssdn.denoise`` and ``ssdn.export``."""
