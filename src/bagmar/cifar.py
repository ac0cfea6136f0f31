"""CIFAR-100 from the official python archive, md5-verified (SPEC §1), read without running pickled code."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np

from .data import ImageSet

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"
MEMBER_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
NUM_CLASSES = 100


class DataError(RuntimeError):
    """The data on disk cannot be used; the message says which file and what to do."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    found = md5sum(path)
    if found != expected:
        raise DataError(
            f"{path}: md5 {found} does not match the official {expected}. The file is corrupt or not the "
            "official CIFAR-100; it was left in place and not used. Delete it to download again, or replace it "
            "with the official archive."
        )


class _RestrictedUnpickler(pickle.Unpickler):
    """The official files hold only dicts, lists, str, bytes and ints: no class may be loaded."""

    def find_class(self, module: str, name: str):
        raise DataError(f"refusing to unpickle {module}.{name}: the official CIFAR files contain no objects")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, encoding="bytes").load()


def ensure_cifar100(root: str | Path, download: bool, member_md5: dict[str, str] = MEMBER_MD5,
                    archive_md5: str = ARCHIVE_MD5) -> Path:
    """The verified ``cifar-100-python`` folder under ``root``: used as is, else extracted from the
    official archive there, else downloaded (never twice: a valid archive or folder is reused)."""
    root = Path(root)
    folder, archive = root / FOLDER, root / ARCHIVE
    if not all((folder / name).is_file() for name in member_md5):
        if not archive.is_file():
            if not download:
                raise DataError(
                    f"CIFAR-100 not found: neither {folder}/ nor {archive} exists, and download is off. "
                    f"Copy the official {ARCHIVE} into {root}/ (or set dataset.root to where it is), "
                    "or set dataset.download: true on a machine with internet."
                )
            from torchvision.datasets.utils import download_url

            try:
                download_url(URL, str(root), ARCHIVE, archive_md5)
            except Exception as error:  # network errors come in many types
                raise DataError(
                    f"could not download CIFAR-100 from {URL} into {root}/ ({error}). Copy the official {ARCHIVE} "
                    f"there by hand (md5 {archive_md5}) and run again."
                ) from error
        _verify(archive, archive_md5)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    missing = [name for name in member_md5 if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}/ lacks {', '.join(missing)}; replace it with the official archive's contents")
    for name, expected in member_md5.items():
        _verify(folder / name, expected)
    return folder


def load_cifar100(root: str | Path, download: bool = False, **digests) -> ImageSet:
    """CIFAR-100 with fine labels as an ImageSet of (N, 32, 32, 3) uint8 images."""
    folder = ensure_cifar100(root, download, **digests)

    def part(name: str) -> tuple[np.ndarray, np.ndarray]:
        entry = _unpickle(folder / name)
        data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(data), np.asarray(entry[b"fine_labels"], dtype=np.int64)

    train_images, train_labels = part("train")
    test_images, test_labels = part("test")
    return ImageSet(train_images, train_labels, test_images, test_labels, NUM_CLASSES)
