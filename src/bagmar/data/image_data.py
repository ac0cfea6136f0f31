"""Images of an image-list data set for training and testing: decoding, augmentation and the epoch's order.

- ``read_image``: one listed JPEG, decoded by torchvision (libjpeg-turbo); a file that is missing, truncated or
  corrupt stops the run with its list, line and path (never skipped: a skipped image changes the class counts
  the statistics and the tables rest on).
- ``TrainImages`` / ``TestImages``: torch Datasets whose items are cropped uint8 images, decoded in DataLoader
  workers. A training item is asked for as (image index, epoch, position in the epoch), and draws all its random
  numbers from seeds of (seed, epoch, position): the numbers do not depend on the number of workers, and a
  resumed epoch draws what the uninterrupted one drew.
- ``epoch_order``: which images an epoch trains on, in order (instance-balanced, or the released
  ClassAwareSampler), a function of (seed, epoch) alone.
- ``prepare``: on the training device, batched: uint8 -> float, ColorJitter from the drawn factors, normalise.

Two training augmentations (``AUGMENTS``), each as a released data loader applies it:

- ``released_lt``: the paper's released code (data/dataloader.py, get_data_transform('train')): reflect-pad 4,
  RandomResizedCrop(224), horizontal flip, ColorJitter(0.4, 0.4, 0.4, 0), timm's RandAugment 'rand-n2-m10-mstd0.5'
  (translate_const int(224 * 0.45), the data set's mean as fill), normalised with ImageNet's mean and std whatever
  the data set. It runs in the workers on PIL images, torchvision's and timm's own transforms composed as released
  (``released_lt_transform``), their global random generators seeded per item. The released code holds its own
  copy of timm's RandAugment (data/randaugment.py); the two were compared output for output on seeded images,
  and the test pins the composition and the seeding against the released Compose run with timm's.
- ``kang``: Kang et al.'s classifier-balancing data loader: RandomResizedCrop(224, scale 0.08-1, ratio 3/4-4/3),
  horizontal flip, ColorJitter(c, c, c, 0), normalised with the recipe's mean and std. The crop and flip run in
  the workers; ColorJitter applies brightness, contrast and saturation in that fixed order (torchvision draws a
  random order per image), batched on the device.

Testing is the same for both: Resize(256), CenterCrop(224), the recipe's mean and std.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from .image_lists import ImageList
from ..io import DataError

# torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec, and warns on every call (a million
# times an ImageNet-LT epoch). They remain its libjpeg-turbo decoders, 1.4x faster than Pillow's here
# (benchmarks/input_pipeline.py); docs/large-scale.md says where they run.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
                        category=DeprecationWarning)


AUGMENTS = ("released_lt", "kang")
# The released training normalisation, whatever the data set (data/dataloader.py, get_data_transform: `normalize`).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_image(root: str | Path, image_list: ImageList, index: int) -> torch.Tensor:
    """Listed image ``index`` as uint8 (3, H, W) RGB; any failure names the list's file and line, and the image."""
    path = Path(root) / image_list.images[index]
    where = f"{image_list.path}:{index + 1}"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{where}: cannot read {path} ({error.strerror or error}); restore the file, or point "
                        "dataset.image_list.images at the extracted data set") from None
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
        raise DataError(f"{where}: {path} cannot be decoded ({len(data):,} bytes; {reason}); the file is "
                        "truncated or corrupt: fetch it again") from None


def random_resized_crop(rng: np.random.Generator, height: int, width: int, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w): torchvision's RandomResizedCrop.get_params, drawn from ``rng``: ten tries at an area
    fraction and a log-uniform aspect ratio, then the largest centred crop within the ratio range."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _reflect_pad_4(x: torch.Tensor) -> torch.Tensor:
    """The released Lambda: F.pad(x.unsqueeze(0), (4, 4, 4, 4), mode='reflect').squeeze()."""
    return torch.nn.functional.pad(x.unsqueeze(0), (4, 4, 4, 4), mode="reflect").squeeze()


def released_lt_transform(image_size: int, mean: tuple[float, ...]) -> T.Compose:
    """The released training transform up to its ToTensor, PIL image -> PIL image (data/dataloader.py,
    get_data_transform('train')): its float round trip (ToTensor, reflect pad, ToPILImage, which truncates x * 255),
    RandomResizedCrop, flip, ColorJitter(0.4, 0.4, 0.4, 0) and timm's RandAugment, whose translate_const is
    int(224 * 0.45) there: int(image_size * 0.45) here, the same at 224. Draws from the global generators of
    torch, random and numpy (TrainImages seeds them per item)."""
    from timm.data.auto_augment import rand_augment_transform  # timm's RandAugment, as the released copy of it

    ra_params = dict(translate_const=int(image_size * 0.45), img_mean=tuple(min(255, round(255 * x)) for x in mean))
    return T.Compose([
        T.ToTensor(), T.Lambda(_reflect_pad_4), T.ToPILImage(),
        T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0),
        rand_augment_transform("rand-n2-m10-mstd0.5", ra_params),
    ])


@contextlib.contextmanager
def seeded_global_generators(seeds: np.ndarray):
    """Seed torch's CPU generator, random's and numpy's legacy one from three seeds, and put back their states
    after: an item's draws follow from its seeds alone, and the training process's own draws are untouched."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seeds[0]))  # the CPU generator only, which torchvision draws from
        random.seed(int(seeds[1]))
        np.random.seed(int(seeds[2]))
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@dataclasses.dataclass
class TrainImages(Dataset):
    """Training items: item (index, epoch, position) -> (uint8 (3, S, S) image, label, jitter factors (3,)).

    ``augment`` (AUGMENTS): released_lt returns the fully augmented image (jitter factors 1: nothing is left for
    the device but normalising with ``normalisation``); kang returns the crop and the ColorJitter factors that
    ``prepare`` applies on the device. ``mean``: the data set's mean, released_lt's RandAugment fill."""

    root: str | Path
    image_list: ImageList
    seed: int
    image_size: int
    color_jitter: float
    augment: str
    mean: tuple[float, ...] = IMAGENET_MEAN

    def __post_init__(self):
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment '{self.augment}' is not one of {', '.join(AUGMENTS)}")
        self._released = released_lt_transform(self.image_size, self.mean) if self.augment == "released_lt" else None

    @property
    def jitters_on_device(self) -> bool:
        """Whether ``prepare`` has ColorJitter left to apply (kang with a non-zero colour jitter)."""
        return self._released is None and bool(self.color_jitter)

    def normalisation(self, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple, tuple]:
        """The training images' mean and std: ImageNet's for released_lt (as released), else the recipe's."""
        return (IMAGENET_MEAN, IMAGENET_STD) if self._released is not None else (tuple(mean), tuple(std))

    def __len__(self) -> int:
        return len(self.image_list.images)

    def __getitem__(self, item: tuple[int, int, int]):
        index, epoch, position = item
        rng = np.random.default_rng([self.seed, epoch, position])
        image = read_image(self.root, self.image_list, index)
        label = int(self.image_list.labels[index])
        if self._released is not None:
            with seeded_global_generators(rng.integers(0, 2**32, size=3)):
                augmented = self._released(TF.to_pil_image(image))
            return TF.pil_to_tensor(augmented), label, torch.ones(3)
        top, left, h, w = random_resized_crop(rng, image.shape[-2], image.shape[-1])
        crop = TF.resized_crop(image, top, left, h, w, [self.image_size, self.image_size], antialias=True)
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        jitter = rng.uniform(1 - self.color_jitter, 1 + self.color_jitter, size=3) if self.color_jitter else np.ones(3)
        return crop, label, torch.as_tensor(jitter, dtype=torch.float32)


@dataclasses.dataclass
class TestImages(Dataset):
    """Test items: index -> (uint8 (3, S, S): the shorter side resized to ``resize_size``, centre crop, label)."""

    root: str | Path
    image_list: ImageList
    image_size: int
    resize_size: int

    def __len__(self) -> int:
        return len(self.image_list.images)

    def __getitem__(self, index: int):
        image = TF.resize(read_image(self.root, self.image_list, index), [self.resize_size], antialias=True)
        return TF.center_crop(image, [self.image_size, self.image_size]), int(self.image_list.labels[index])


def epoch_order(labels: np.ndarray, classes: int, seed: int, epoch: int, sampler: str,
                samples_per_class: int) -> np.ndarray:
    """The epoch's image indices in training order, len(labels) of them, from (seed, epoch) alone.

    instance: a random permutation. class_aware: the released ClassAwareSampler: classes in a shuffled order,
    cycled (reshuffled after each pass), each giving its next ``samples_per_class`` images from its own
    shuffled cycle of images, until the epoch's len(labels) images are drawn (Kang et al.'s loop keeps an
    epoch at len(train set) / batch steps whatever the sampler).
    """
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    n = len(labels)
    if sampler == "instance":
        return rng.permutation(n)
    if sampler != "class_aware":
        raise ValueError(f"unknown sampler {sampler!r}")
    by_class = [np.flatnonzero(labels == c) for c in range(classes)]
    present = [c for c in range(classes) if len(by_class[c])]
    visits = -(-n // samples_per_class)  # class visits the epoch needs
    class_sequence = np.concatenate([rng.permutation(present) for _ in range(-(-visits // len(present)))])[:visits]
    needed = np.bincount(class_sequence, minlength=classes) * samples_per_class
    cycles = {}
    for c in present:  # each class's own cycle of shuffled passes over its images, as long as it is needed
        passes = -(-needed[c] // len(by_class[c]))
        cycles[c] = np.concatenate([rng.permutation(by_class[c]) for _ in range(passes)]) if passes else by_class[c][:0]
    taken = dict.fromkeys(present, 0)
    order = np.empty(visits * samples_per_class, dtype=np.int64)
    for visit, c in enumerate(class_sequence.tolist()):
        start = taken[c]
        order[visit * samples_per_class:(visit + 1) * samples_per_class] = cycles[c][start:start + samples_per_class]
        taken[c] = start + samples_per_class
    return order[:n]


def rank_positions(step: int, batch_size: int, world=None) -> range:
    """Positions in the epoch's order of this rank's share of step ``step``: the global batch of that step is
    positions [step * B, (step + 1) * B), and rank r takes the r-th of its N contiguous slices of B / N. ``world``:
    this process's rank and the ranks' batch (bagmar.training.distributed.World); None for a single process."""
    if world is None:
        return range(step * batch_size, (step + 1) * batch_size)
    per_rank = world.per_rank_batch(batch_size)
    start = step * batch_size + world.rank * per_rank
    return range(start, start + per_rank)


class _EpochBatches:
    """The batch sampler of one epoch: lists of (index, epoch, position), this rank's share of each global batch."""

    def __init__(self, order: np.ndarray, epoch: int, batch_size: int, steps: int, world=None):
        self.order, self.epoch, self.batch_size, self.steps, self.world = order, epoch, batch_size, steps, world

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for step in range(self.steps):
            yield [(int(self.order[p]), self.epoch, p) for p in rank_positions(step, self.batch_size, self.world)]


def train_loader(images: TrainImages, order: np.ndarray, epoch: int, batch_size: int, workers: int,
                 device: torch.device | str, world=None) -> DataLoader:
    """The epoch's batches (the last incomplete one dropped), decoded by ``workers`` processes ahead of the step;
    in a data-parallel training, this rank's B / N images of each (rank_positions)."""
    return DataLoader(images, batch_sampler=_EpochBatches(order, epoch, batch_size, len(order) // batch_size, world),
                      num_workers=workers, pin_memory=torch.device(device).type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if workers else None)


def test_loader(images: TestImages, batch_size: int, workers: int, device: torch.device | str) -> DataLoader:
    return DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=torch.device(device).type == "cuda", prefetch_factor=4 if workers else None)


def prepare(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
            jitter: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, 3, S, S) on the device -> normalised float32, after ColorJitter with per-image (brightness,
    contrast, saturation) factors (B, 3) where given: torchvision's blends, clamped to [0, 1] after each."""
    x = images.float().div_(255)
    if jitter is not None:
        b, c, s = (jitter[:, i, None, None, None].to(x) for i in range(3))
        x = (x * b).clamp_(0, 1)
        gray_mean = _grayscale(x).mean((-3, -2, -1), keepdim=True)
        x = ((x - gray_mean) * c + gray_mean).clamp_(0, 1)
        gray = _grayscale(x)
        x = ((x - gray) * s + gray).clamp_(0, 1)
    mean_t, std_t = _normaliser(tuple(mean), tuple(std), x.device)
    return (x - mean_t) / std_t


@functools.lru_cache(maxsize=8)
def _normaliser(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """Mean and std as (3, 1, 1) device tensors, made once: a copy to the GPU every step would wait for it."""
    return (torch.tensor(mean, device=device)[:, None, None], torch.tensor(std, device=device)[:, None, None])


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma, torchvision's rgb_to_grayscale, (B, 1, H, W)."""
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
