"""Training with Lightning: the LightningModule and everything around a run (budget, checkpoints, loggers, launch)."""
