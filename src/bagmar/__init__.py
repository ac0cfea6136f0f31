"""BaGMar (Balanced Gradient Margin) for long-tailed classification: the method, as a library.

The method: data (image sets, long-tailed cut, synthetic data), cifar (official archives,
md5-verified, read without running pickled code), augment (SPEC §3 on the device), model
(ResNet-32), loss (one model's gradient statistics, adjusted logits and loss), train (the recipe
and its loop), checkpoint (resume), evaluate (PN, shot groups, tau selection). The engine that
runs it fast: engine (K models as one grouped network, stacked statistics, device SGD, CUDA-graph
step). Presentation, reading result files only: tables, render, plots. The workflow's side:
layout (every path and the training groups), fingerprint (rerun triggers). Plumbing: io.
The package never imports Snakemake; the workflow calls it through scripts/.
"""
