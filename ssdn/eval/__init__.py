"""The paper's evaluation, in three modules imported where needed (so that e.g. training code can use the
metrics without the evaluator's dependencies):

- ``ssdn.eval.metrics``: ``quantize``, ``psnr``, ``ssim``, ``mean_psnr``;
- ``ssdn.eval.protocol``: replicated test sets, seeded noise, padding modes;
- ``ssdn.eval.evaluator``: ``evaluate(denoiser, sets, noise, ...)`` and ``write_results``.
"""
