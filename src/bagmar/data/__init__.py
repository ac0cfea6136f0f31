"""The data: image sets, the long-tailed cut and augmentation.

- ``long_tail``: balanced image sets, the long-tailed cut of SPEC §1, and the synthetic stand-in for CIFAR;
- ``cifar``: CIFAR-10/100 acquisition and md5 verification (no pickle ever runs code);
- ``augment``: SPEC §3's augmentation batched on the device (crop, flip, AutoAugment, Cutout);
- ``image_lists``: the split lists of ImageNet-LT, Places-LT and iNaturalist 2018 (and the miniature), verified;
- ``image_data``: their JPEGs decoded and cropped in DataLoader workers, colour jitter on the device.
"""
