"""The paper's evaluation, in modules imported where needed (so that e.g. training code can use the
metrics without the evaluator's dependencies):

- ``ssdn.eval.metrics``: ``quantize``, ``psnr``, ``ssim``, ``mean_psnr``;
- ``ssdn.eval.protocol``: replicated test sets, seeded noise, padding modes; ``protocol_configs`` builds a
  ``ProtocolConfig`` per set from the run config;
- ``ssdn.eval.evaluator``: ``evaluate(denoiser, protocols, settings)`` and ``write_results``;
- ``ssdn.eval.settings``: ``EvalSettings``, how an evaluation runs (device, batch size, journal, calibration);
- ``ssdn.eval.results``: the result types; ``ssdn.eval.journal``: the resume journal; ``ssdn.eval.pool``: the
  process pool for classical methods.
"""
