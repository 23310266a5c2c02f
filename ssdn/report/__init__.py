"""Sweep results beside the paper's numbers: ``python -m ssdn.report multirun/table1 --out reports/table1``.

One concept per module: `paper` (the paper's numbers), `runs` (finished runs read from their folders),
`wandb_group` (runs from W&B), `train_files` (what a subset run trained on; the Hydra callback), `rows`
(run → paper row), `tables` (Markdown/CSV), `plots` (PNG; matplotlib imported only when plotting) and `cli`
(``main``, ``build_report``). The names users type stay here: the ``ssdn-report`` console script
(``ssdn.report:main``) and the Hydra callback ``ssdn.report.RecordTrainFiles``.
"""

from ssdn.report.cli import build_report, main
from ssdn.report.train_files import RecordTrainFiles

__all__ = ["RecordTrainFiles", "build_report", "main"]
