"""The large long-tailed benchmarks' split lists: ImageNet-LT, Places-LT, iNaturalist 2018.

The literature's splits (OLTR's, as the paper's released code ships them) are text lists of
``relative/path label``, one image a line, under an image root. This module reads them and checks them
against the facts recorded below, so that a wrong, truncated or edited list stops a run before any
training, with one line that names the file, the line and the fix:

- ``read_list``: every line is ``<path> <integer label>``; no path twice; labels in ``[0, classes)``;
- ``verify_list``: the list's sha256 where it is recorded, else its line count, and for a training list
  the per-class counts (total, largest, smallest) and that every class appears;
- ``missing_images``: the listed images absent under the image root (the count and the first few).

The lists themselves are not part of the project: a run finds them in a local copy or downloads them
(workflow, to come), then verifies them here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from ..io import DataError, download


@dataclasses.dataclass(frozen=True)
class SplitFacts:
    """What a split list must hold: its line count, its sha256 where recorded, and for a training split the
    per-class extremes (the literature's figures)."""

    images: int
    sha256: str | None = None
    largest: int | None = None
    smallest: int | None = None


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """A data set's class count, its splits' facts, the list files' names (as the released code names them,
    ``data/<name>/<name>_<split>.txt``) and the split the literature tests on."""

    title: str
    classes: int
    splits: dict[str, SplitFacts]
    stem: str = ""  # list file names: <stem>_<split>.txt
    test_split: str = "test"

    def file(self, split: str) -> str:
        return f"{self.stem}_{split}.txt"

    @property
    def imbalance_factor(self) -> float:
        """The training list's largest over smallest class: the imbalance factor its results are filed under."""
        train = self.splits["train"]
        return train.largest / train.smallest

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "DatasetFacts":
        return cls(**{**data, "splits": {k: SplitFacts(**v) for k, v in data["splits"].items()}})


# Counts: the papers' and the released code's (train counts also in its per-class json); sha256 of the lists
# as the literature distributes them (read 2026-11-29 from copies of OLTR's lists). iNaturalist 2018's "val"
# list is the literature's test set.
DATASETS = {
    "imagenet_lt": DatasetFacts("ImageNet-LT", 1000, {
        "train": SplitFacts(115_846, largest=1280, smallest=5),
        "val": SplitFacts(20_000, "9af7ba688acf9532ff5845a8fb14a1e97fdc4c51ac48bc72c08ea9c3f7ff142e"),
        "test": SplitFacts(50_000, "d1590191cf8a71fada7b1aaedaa2d139a2aea93ff2f1b755319d0bd8dbaa55d5"),
    }, stem="ImageNet_LT"),
    "places_lt": DatasetFacts("Places-LT", 365, {
        "train": SplitFacts(62_500, "981eb2a3aca124826ee016df1d75fa42d9fd72ada3b5b723c402d0593593790e", 4980, 5),
        "val": SplitFacts(7_300, "c27e5d755960932fca355e7d644e455474a9d02340b6ad28aafbcb7b7cb7ab71"),
        "test": SplitFacts(36_500, "44eee8441c8098c59195465abede425721bc35525d75209f9433b161a6eb37bc"),
    }, stem="Places_LT"),
    "inat2018": DatasetFacts("iNaturalist 2018", 8142, {
        "train": SplitFacts(437_513, largest=1000, smallest=2),
        "val": SplitFacts(24_426, "c8ef434df49d049d1b844cfb88ebaf5e419772ba05300d9c1edda9ff8f660358"),
    }, stem="iNaturalist18", test_split="val"),
}


VALIDATION_SPLIT = "val"


def validation_split(dataset: str) -> str | None:
    """The list a data set's choices (tau, a post-hoc rule's exponent) are made on, apart from its test list:
    "val" for ImageNet-LT (20,000 images), Places-LT (7,300) and the miniature; None for iNaturalist 2018, whose
    "val" list is the literature's test set, and for data sets without lists (CIFAR has no official validation
    split)."""
    if dataset == "miniature":
        return VALIDATION_SPLIT
    facts = DATASETS.get(dataset)
    if facts is None or VALIDATION_SPLIT not in facts.splits or facts.test_split == VALIDATION_SPLIT:
        return None
    return VALIDATION_SPLIT


def no_validation_split(dataset: str) -> str | None:
    """Why a data set has no validation list to choose on, as the tables say it (None: it has one)."""
    if validation_split(dataset) is not None:
        return None
    if dataset in DATASETS:
        return f"{DATASETS[dataset].title}'s only validation list is the literature's test set"
    return f"the data set ({dataset}) has no official validation split"


@dataclasses.dataclass(frozen=True)
class ImageList:
    """One split: image paths relative to the image root, and their labels (int64)."""

    path: Path
    images: tuple[str, ...]
    labels: np.ndarray

    def class_counts(self, classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=classes)


def read_list(path: str | Path, classes: int) -> ImageList:
    """Parse a split list; the first bad line stops it with its file and line number."""
    path = Path(path)
    images, labels, seen = [], [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            where = f"{path}:{number}"
            fields = line.rstrip("\n").rsplit(" ", 1)
            if len(fields) != 2 or not fields[0] or not fields[1].lstrip("-").isdigit():
                raise DataError(f"{where}: expected '<relative/path> <integer label>', got {line.rstrip()!r}; "
                                "the list may be truncated or edited: fetch it again")
            image, label = fields[0], int(fields[1])
            if not 0 <= label < classes:
                raise DataError(f"{where}: label {label} is outside 0..{classes - 1} ({image}); "
                                "this list belongs to another data set, or was edited")
            if image in seen:
                raise DataError(f"{where}: {image} is listed twice (first on line {seen[image]}); "
                                "remove the duplicated line or fetch the list again")
            seen[image] = number
            images.append(image)
            labels.append(label)
    if not images:
        raise DataError(f"{path}: the list is empty; fetch it again")
    return ImageList(path, tuple(images), np.asarray(labels, dtype=np.int64))


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_list(path: str | Path, dataset: str | DatasetFacts, split: str) -> ImageList:
    """Read a split list and check it against DATASETS (or the facts given): sha256 where recorded, else the line
    count, and a training list's per-class counts. Every problem is one line naming the file and what was expected."""
    if isinstance(dataset, DatasetFacts):
        facts = dataset
    elif dataset in DATASETS:
        facts = DATASETS[dataset]
    else:
        raise DataError(f"unknown data set {dataset!r}; one of {', '.join(DATASETS)}")
    if split not in facts.splits:
        raise DataError(f"{facts.title} has no {split!r} list; its lists: {', '.join(facts.splits)}")
    expected = facts.splits[split]
    if expected.sha256 is not None and (found := sha256(path)) != expected.sha256:
        raise DataError(f"{path}: sha256 {found}, not {facts.title}'s {split} list ({expected.sha256}); "
                        "fetch the official list again")
    image_list = read_list(path, facts.classes)
    problems = []
    if len(image_list.images) != expected.images:
        problems.append(f"{len(image_list.images):,} images, not {expected.images:,}")
    counts = image_list.class_counts(facts.classes)
    if (counts == 0).any():
        absent = np.flatnonzero(counts == 0)
        problems.append(f"{len(absent)} of {facts.classes} classes have no image (first: {absent[:5].tolist()})")
    if expected.largest is not None and counts.max() != expected.largest:
        problems.append(f"the largest class has {counts.max()} images, not {expected.largest}")
    if expected.smallest is not None and counts.min() != expected.smallest:
        problems.append(f"the smallest class has {counts.min()} images, not {expected.smallest}")
    if problems:
        raise DataError(f"{path}: not {facts.title}'s {split} list: {'; '.join(problems)}; fetch the official "
                        "list again")
    return image_list


def missing_images(image_list: ImageList, root: str | Path, show: int = 5) -> tuple[int, list[str]]:
    """How many listed images are absent under ``root``, and the first ``show`` of them as '<list>:<line> <path>'."""
    root = Path(root)
    missing = [number for number, image in enumerate(image_list.images, start=1) if not (root / image).is_file()]
    return len(missing), [f"{image_list.path}:{n} {image_list.images[n - 1]}" for n in missing[:show]]


def require_images(image_list: ImageList, root: str | Path) -> None:
    """Stop before any training when a listed image is absent, with the count and the first few (list and line)."""
    count, first = missing_images(image_list, root)
    if count:
        raise DataError(f"{count:,} of the {len(image_list.images):,} images of {image_list.path} are missing "
                        f"under {root} (first: {', '.join(first)}); point the image root at the extracted "
                        "data set, or fetch the missing files")


def write_miniature(root: str | Path, name: str = "Mini_LT", classes: int = 30, imbalance_factor: float = 50,
                    max_per_class: int = 100, val_per_class: int = 5, test_per_class: int = 10,
                    image_size: int = 64, seed: int = 0) -> DatasetFacts:
    """A miniature data set in the large benchmarks' on-disk layout, for demos and tests: JPEGs under
    ``root/{train,val,test}/class_<c>/<i>.jpg`` and the lists ``root/<name>_{train,val,test}.txt``.

    The images are bagmar.data.long_tail.make_synthetic's class patterns; the training split is cut long-tailed
    (SPEC §1's counts for ``classes``, ``max_per_class`` and ``imbalance_factor``), val and test are balanced.
    Returns the facts that verify_list checks (counts, per-class extremes, each list's sha256), so that the
    miniature is verified exactly as the real lists are. The same arguments write the same bytes.
    """
    from PIL import Image  # torchvision's JPEG encoder is deprecated (0.29); Pillow is the reference one

    from .long_tail import long_tailed_counts, make_synthetic

    root = Path(root)
    counts = long_tailed_counts(classes, max_per_class, imbalance_factor)
    pool = make_synthetic(classes, max_per_class + val_per_class, test_per_class, image_size, seed=seed)
    by_class = {c: np.flatnonzero(pool.train_labels == c) for c in range(classes)}
    chosen = {
        "train": [(c, pool.train_images[i]) for c in range(classes) for i in by_class[c][:counts[c]]],
        "val": [(c, pool.train_images[i]) for c in range(classes) for i in by_class[c][max_per_class:]],
        "test": [(c, image) for c, image in zip(pool.test_labels.tolist(), pool.test_images)],
    }
    splits = {}
    for split, items in chosen.items():
        lines, numbered = [], {}
        for label, image in items:
            index = numbered[label] = numbered.get(label, -1) + 1
            relative = f"{split}/class_{label:03d}/{index:05d}.jpg"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / relative, format="JPEG", quality=90)
            lines.append(f"{relative} {label}\n")
        list_path = root / f"{name}_{split}.txt"
        list_path.write_text("".join(lines))
        per_class = np.bincount([label for label, _ in items], minlength=classes)
        splits[split] = SplitFacts(len(items), sha256(list_path), int(per_class.max()), int(per_class.min()))
    return DatasetFacts(name, classes, splits, stem=name)


def miniature_imbalance_factor(classes: int, max_per_class: int, imbalance_factor: float) -> float:
    """The miniature training list's largest over smallest class (SPEC §1's truncated counts), as planned."""
    from .long_tail import long_tailed_counts

    counts = long_tailed_counts(classes, max_per_class, imbalance_factor)
    return max(counts) / min(counts)


def fetch_list(file: str, lists: str | Path, url: str | None) -> Path:
    """A list file from the local folder ``lists``, else downloaded from ``url`` (``{file}`` in it) into that folder
    (written whole or not at all); neither: one error naming the file, the folder and the fix."""
    local = Path(lists) / file
    if local.is_file():
        return local
    if not url:
        raise DataError(f"{file} is not in {lists} and no dataset.image_list.url is set to download it from; copy "
                        f"the list there (the literature's split lists, e.g. from the released code's data/ folder)")
    source = url.format(file=file)
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(local.name + ".part")  # renamed once whole, as CIFAR's archives are
    partial.unlink(missing_ok=True)  # an interrupted earlier download
    try:
        download(source, partial)
    except Exception as error:  # urllib, socket and HTTP errors come in many types
        partial.unlink(missing_ok=True)
        raise DataError(f"{file}: download from {source} failed ({type(error).__name__}: {error}); copy the list "
                        f"into {lists} instead, or fix dataset.image_list.url") from None
    os.replace(partial, local)
    return local


def prepare(facts: DatasetFacts, lists: str | Path, url: str | None, images: str | Path, destination: str | Path,
            reference: str = "") -> dict:
    """Find, verify and copy a data set's lists before any training: every list (sha256 or counts), every listed
    image present under ``images``, the test list's labels in range. Writes ``destination/<split>.txt`` for
    each split and returns the provenance (what was checked, where from, the training counts)."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    # as given (relative to the working directory, where Snakemake runs every job): a moved or copied project
    # keeps finding its images
    provenance = {"title": facts.title, "location": str(images), "images_root": str(images),
                  "test_split": facts.test_split, "lists": {}}
    for split in facts.splits:
        found = fetch_list(facts.file(split), lists, url)
        image_list = verify_list(found, facts, split)
        require_images(image_list, images)
        (destination / f"{split}.txt").write_bytes(found.read_bytes())
        provenance["lists"][split] = {"file": str(found), "images": len(image_list.images), "sha256": sha256(found)}
        if split == "train":
            provenance["class_counts"] = image_list.class_counts(facts.classes).tolist()
    recorded = all(split.sha256 for split in facts.splits.values())
    provenance["note"] = (f"every list matched its recorded sha256{reference}, and every listed image was found"
                          if recorded else
                          f"lists checked by line count and per-class counts{reference} (sha256 recorded for "
                          f"{', '.join(s for s, f in facts.splits.items() if f.sha256) or 'none'}), and every "
                          "listed image was found")
    return provenance
