"""Snakemake job: find, download or extract CIFAR-100, verify its md5s, and store it as an image set."""
from bagmar.cifar import load_cifar100
from bagmar.io import log_to

with log_to(snakemake.log[0]):
    images = load_cifar100(snakemake.params.root, download=snakemake.params.download)
    images.save(snakemake.output.images)
    print(f"CIFAR-100: {len(images.train_labels)} train / {len(images.test_labels)} test images, md5-verified")
