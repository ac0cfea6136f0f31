"""BaGMar (Balanced Gradient Margin) for long-tailed classification: the method, as a library.

The method: data (image sets, long-tailed cut, synthetic data), cifar (official archives,
md5-verified, read without running pickled code), augment (SPEC §3 on the device), model
(ResNet-32), loss (BaGMar and its gradient statistics), train (the recipe), checkpoint (resume),
evaluate (PN, shot groups, tau selection). Presentation, reading result files only: tables,
render, plots. Plumbing: io (atomic writes, job logs).
The package never imports Snakemake; the workflow calls it through scripts/.
"""
