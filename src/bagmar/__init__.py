"""BaGMar (Balanced Gradient Margin) for long-tailed classification: the method, as a library.

Modules: data (image sets, long-tailed cut, synthetic data), augment (SPEC §3 on the device),
model (ResNet-32), loss (BaGMar and its gradient statistics), train (the recipe), evaluate
(PN, shot groups), tables and render (presentation, reading result files only), io.
The package never imports Snakemake; the workflow calls it through scripts/.
"""
