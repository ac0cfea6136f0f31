"""Snakemake job: generate the synthetic balanced image set."""
from bagmar.data.long_tail import make_synthetic
from bagmar.io import log_to

with log_to(snakemake.log[0]):
    images = make_synthetic(**snakemake.params.synthetic)
    images.save(snakemake.output.images)
    print(f"{len(images.train_labels)} train / {len(images.test_labels)} test images, {images.num_classes} classes, "
          f"{images.train_images.shape[1]}x{images.train_images.shape[2]}")
