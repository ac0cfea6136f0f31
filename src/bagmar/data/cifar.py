"""CIFAR-100 and CIFAR-10 from the official python archives: found, md5-verified, read safely.

Where the images come from (``locate``), first match wins:

1. ``unofficial_copy`` (an explicit opt-in naming a copy whose md5s differ from the official ones,
   e.g. a re-encoded mirror in the official layout): used as it is; its own md5s are recorded and
   the record says that the official verification was skipped;
2. ``path``: a local copy, either the official archive or its extracted folder;
3. ``root``, the data directory: the extracted folder, else the archive, else a download of the
   official archive into it (through torchvision; only when ``download`` is on).

Every official file is checked against its md5 before use. Nothing is deleted or overwritten
(but for the ``.part`` file of an interrupted download): a bad file stays where it is and the
error names it, with the expected and found digests and what to do. Archives are read in place
(no extraction). The pickles are read with an unpickler that can build plain containers and numpy
arrays only, so reading them runs no code. The official pickles are Python 2's (byte-string keys); a copy
re-written by Python 3 (str or byte keys, pickle protocol 2 to 4) is read the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np

from .long_tail import ImageSet
from ..io import DataError, download


@dataclasses.dataclass(frozen=True)
class CifarFormat:
    """One official CIFAR python release: where it lives, its md5s, and how its pickles are keyed."""

    name: str  # the config's dataset.name
    title: str
    url: str
    archive: str
    archive_md5: str
    folder: str  # the archive's top-level folder
    train: tuple[str, ...]  # members holding the training images, in order
    test: tuple[str, ...]
    meta: str
    member_md5: dict[str, str]
    labels_key: bytes
    names_key: bytes  # the meta member's list of class names
    num_classes: int

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)

    def with_digests(self, archive_md5: str | None = None, member_md5: dict[str, str] | None = None) -> "CifarFormat":
        """The same format checked against other digests (tests point it at archives they build)."""
        return dataclasses.replace(self, archive_md5=archive_md5 or self.archive_md5,
                                   member_md5=member_md5 or self.member_md5)


CIFAR100 = CifarFormat(
    name="cifar100",
    title="CIFAR-100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive="cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python",
    train=("train",),
    test=("test",),
    meta="meta",
    member_md5={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    labels_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
)

CIFAR10 = CifarFormat(
    name="cifar10",
    title="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive="cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    meta="batches.meta",
    member_md5={  # as torchvision.datasets.CIFAR10 lists them
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    labels_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
)

FORMATS = {f.name: f for f in (CIFAR100, CIFAR10)}


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- copies on disk


class _Copy:
    """The members of one copy of a release, read from its folder or straight from its archive."""

    def __init__(self, fmt: CifarFormat, location: Path):
        self.fmt, self.location = fmt, location
        self.is_archive = location.is_file()
        if not self.is_archive:
            self.files = {p.name for p in location.iterdir() if p.is_file()}
            self.folders = {p.name for p in location.iterdir() if p.is_dir()}
            return
        try:
            with tarfile.open(location, "r:*") as tar:
                entries = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DataError(f"{location}: not a readable tar archive ({error}). Replace it with the official "
                            f"{fmt.archive} (md5 {fmt.archive_md5}); it was left in place and not used.") from error
        self.files, self.folders, self._names = set(), set(), {}
        for entry in entries:
            parts = Path(os.path.normpath(entry.name)).parts
            if len(parts) > 1 or entry.isdir():
                self.folders.add(parts[0])
            if entry.isfile() and len(parts) == 2 and parts[0] == fmt.folder:
                self.files.add(parts[1])
                self._names[parts[1]] = entry.name

    def where(self, member: str) -> str:
        """How an error message names a member: its path, or archive:folder/member."""
        return f"{self.location}:{self.fmt.folder}/{member}" if self.is_archive else str(self.location / member)

    def read(self, members: tuple[str, ...]) -> dict[str, bytes]:
        """The members' bytes; an archive is decompressed once, in order."""
        if not self.is_archive:
            return {m: (self.location / m).read_bytes() for m in members}
        wanted, out = {self._names[m]: m for m in members}, {}
        try:
            with tarfile.open(self.location, "r:*") as tar:
                for entry in tar:
                    if entry.name in wanted:
                        out[wanted[entry.name]] = tar.extractfile(entry).read()
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DataError(f"{self.location}: the archive is damaged ({error}). Replace it with the official "
                            f"{self.fmt.archive}; it was left in place and not used.") from error
        return out

    def other_release(self) -> CifarFormat | None:
        """The release these files belong to when they are not ``fmt`` but another CIFAR (10 for 100, or back)."""
        if set(self.fmt.members) <= self.files:
            return None
        for other in FORMATS.values():
            if other.name != self.fmt.name and (set(other.members) <= self.files or other.folder in self.folders
                                                or other.archive in self.files):
                return other
        return None

    def check_layout(self, fix: str) -> None:
        """Refuse another release's files and a copy with members missing, naming the fix."""
        fmt, other = self.fmt, self.other_release()
        if other is not None:
            raise DataError(
                f"{self.location} holds {other.title} ({other.folder}), but dataset.name is {fmt.name} "
                f"({fmt.title}). Set dataset.name: {other.name}, or give the {fmt.title} release "
                f"({fmt.archive} or its {fmt.folder}/ folder)."
            )
        missing = [m for m in fmt.members if m not in self.files]
        if missing:
            inside = f" (under {fmt.folder}/)" if self.is_archive else ""
            raise DataError(f"{self.location} lacks {', '.join(missing)}{inside} (of the official {fmt.title} "
                            f"release: {', '.join(fmt.members)}). {fix}")


def _check_md5(what: str, found: str, expected: str, fix: str) -> None:
    if found != expected:
        raise DataError(
            f"{what}: md5 {found} does not match the official {expected}. The file is corrupt or not the official "
            f"release; it was left in place and not used. {fix}"
        )


def _refuse_other_archive(fmt: CifarFormat, archive: Path, found: str) -> None:
    """An archive with another release's md5 or top folder is that release, whatever its name."""
    for other in FORMATS.values():
        if other.name != fmt.name and found == other.archive_md5:
            raise DataError(
                f"{archive} is the official {other.title} archive ({other.archive}, md5 {found}), but dataset.name "
                f"is {fmt.name}. Set dataset.name: {other.name}, or give {fmt.archive} (md5 {fmt.archive_md5})."
            )
    try:
        copy = _Copy(fmt, archive)
    except DataError:  # unreadable: the md5 mismatch says more
        return
    if copy.other_release() is not None:
        copy.check_layout("")


# --------------------------------------------------------------------------- finding the data


@dataclasses.dataclass(frozen=True)
class Source:
    """A copy that passed the layout checks, and what the results should record about it."""

    copy: _Copy
    origin: str  # how it was found: "folder", "archive", "download" (under root), "path", "unofficial copy"
    official: bool  # its md5s are checked against the official ones

    def record(self, digests: dict[str, str]) -> dict:
        fmt = self.copy.fmt
        return {
            "dataset": fmt.name,
            "title": fmt.title,
            "location": str(self.copy.location),
            "origin": self.origin,
            "official_md5_verified": self.official,
            "note": (f"every member matched the official {fmt.title} md5s" if self.official else
                     f"UNOFFICIAL COPY: the official {fmt.title} md5 verification was skipped (dataset.unofficial_copy)"),
            "member_md5": digests,
        }


def locate(fmt: CifarFormat, root: str | Path = "data", download_missing: bool = False, path: str | Path | None = None,
           unofficial_copy: str | Path | None = None, progress: Callable[[str], None] = print) -> Source:
    """Find ``fmt`` as the module docstring says; check archive md5 and layout (members are checked in ``read``)."""
    root = Path(root)
    if path is not None and unofficial_copy is not None:
        raise DataError(f"dataset.path ({path}) and dataset.unofficial_copy ({unofficial_copy}) are both set; "
                        "set only one: path for an official copy, unofficial_copy to opt in to a non-official one")
    if unofficial_copy is not None:
        copy = _Copy(fmt, _release_in(fmt, Path(unofficial_copy), "dataset.unofficial_copy"))
        copy.check_layout(f"dataset.unofficial_copy must name a copy in the official layout ({fmt.folder}/ with "
                          f"{', '.join(fmt.members)}, or an archive of it).")
        progress(f"{copy.location}: unofficial copy (dataset.unofficial_copy); official md5 verification SKIPPED")
        return Source(copy, "unofficial copy", official=False)
    if path is not None:
        location, origin = _release_in(fmt, Path(path), "dataset.path"), "path"
    elif (root / fmt.folder).is_dir():
        location, origin = root / fmt.folder, "folder"
    elif (root / fmt.archive).is_file():
        location, origin = root / fmt.archive, "archive"
    else:
        location, origin = _download(fmt, root, download_missing, progress), "download"
    if location.is_file():
        found = md5sum(location)
        if found != fmt.archive_md5:
            _refuse_other_archive(fmt, location, found)
            _check_md5(str(location), found, fmt.archive_md5, _replace_hint(fmt, origin))
        progress(f"{location}: md5 {found} matches the official {fmt.archive}")
    copy = _Copy(fmt, location)
    copy.check_layout(f"Give the official {fmt.archive} or its complete {fmt.folder}/ folder." if origin == "path" else
                      f"Restore it from the official {fmt.archive}, or move it away so that {root / fmt.archive} is "
                      "used (or downloaded).")
    return Source(copy, origin, official=True)


def _release_in(fmt: CifarFormat, path: Path, key: str) -> Path:
    """A user-given path may be the archive, the extracted folder, or a folder holding either."""
    for candidate in (path / fmt.folder, path / fmt.archive):
        if path.is_dir() and candidate.exists():
            return candidate
    if path.exists():
        return path
    raise DataError(f"{key} = {path} does not exist. Give the path of the official {fmt.archive} (md5 "
                    f"{fmt.archive_md5}) or of the {fmt.folder}/ folder extracted from it.")


def _replace_hint(fmt: CifarFormat, origin: str) -> str:
    hint = f"Replace it with the official {fmt.archive}"
    if origin in ("archive", "download"):
        hint += " (or delete it to download it again, with dataset.download: true)"
    elif origin == "folder":
        hint += "'s member, or move the folder away to use (or download) the archive"
    return (hint + ". If it is a re-encoded copy you trust, name it in dataset.unofficial_copy instead; the results "
            "will record that the official verification was skipped.")


def _download(fmt: CifarFormat, root: Path, allowed: bool, progress: Callable[[str], None]) -> Path:
    looked = f"looked for {root / fmt.folder}/ and {root / fmt.archive}"
    offline = (f"On a machine without internet, copy the official {fmt.archive} (md5 {fmt.archive_md5}) into "
               f"{root}/, or set dataset.path to that archive or to its extracted {fmt.folder}/ folder.")
    if not allowed:
        raise DataError(f"{fmt.title} not found: {looked}, and dataset.download is false. {offline} "
                        "Or set dataset.download: true on a machine with internet.")
    archive = root / fmt.archive
    partial = archive.with_name(archive.name + ".part")  # our own temporary file; renamed once verified
    progress(f"{fmt.title} not found ({looked}); downloading {fmt.url}")
    root.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)  # an interrupted earlier download
    try:
        download(fmt.url, partial)
    except Exception as error:  # urllib, socket and HTTP errors come in many types
        raise DataError(f"could not download {fmt.title} from {fmt.url} ({type(error).__name__}: {error}); "
                        f"{looked}. {offline}") from error
    _check_md5(f"{partial} (downloaded from {fmt.url})", md5sum(partial), fmt.archive_md5,
               f"Delete it and run again, or copy the official {fmt.archive} into {root}/ by hand.")
    os.replace(partial, archive)
    return archive


# --------------------------------------------------------------------------- reading the pickles


def _latin1_bytes(text, encoding):
    """``_codecs.encode`` as Python 3's pickler uses it for ``bytes`` under protocols 0-2:
    ``encode(str(b, 'latin1'), 'latin1')`` gives back ``b``. Any other use is refused: another codec name
    could make the codec registry import a module, and no CIFAR file needs one."""
    if type(text) is not str or type(encoding) is not str or encoding != "latin1":  # CPython writes 'latin1'
        raise DataError(f"refusing to unpickle _codecs.encode({_described(text)}, {_described(encoding)}): "
                        "only _codecs.encode(<str>, 'latin1'), as Python 3 writes bytes in pickle protocol 2, is "
                        "allowed")
    return text.encode("latin1")


def _described(value) -> str:
    return repr(value) if isinstance(value, (str, bytes)) and len(value) <= 20 else f"<{type(value).__name__}>"


_reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array rebuilder, whatever module it lives in
# What the CIFAR pickles reference, and nothing more. Plain dicts, lists, strings and ints need no global; a
# numpy array (pickle protocols 0-4, numpy 1 or 2) is _reconstruct(ndarray, ...) with a numpy.dtype.
# Python 3 under protocols 0-2 also writes each bytes object as _codecs.encode(<str>, 'latin1') (checked in
# _latin1_bytes); protocols 3 and 4 need no more. Not admitted: numpy._core.numeric._frombuffer (arrays in
# protocol 5) and builtins.bytes (an empty bytes object in protocols 0-2).
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1 (as in the official Python 2 pickles)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,  # Python 3, protocols 0-2: bytes objects
}
_ADMITTED = ", ".join(f"{module}.{name}" for module, name in _SAFE_GLOBALS)


class _RestrictedUnpickler(pickle.Unpickler):
    """CIFAR files hold dicts, lists, strings, ints and numpy arrays: no other global loads."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        raise DataError(f"refusing to unpickle {module}.{name}: CIFAR files (the official ones, or copies written "
                        f"by Python 3 with pickle protocol 2 to 4) reference only {_ADMITTED}")


def _key_text(key) -> str:
    return key.decode(errors="replace") if isinstance(key, bytes) else key if isinstance(key, str) else repr(key)


def _keys_found(entry: dict) -> str:
    return f"keys found: {', '.join(sorted(map(_key_text, entry))) or 'none'}"


def unpickle(data: bytes, where: str) -> dict:
    """One CIFAR pickle, its keys as byte strings. The official files are Python 2's: their strings come back as
    bytes (encoding='bytes', as the CIFAR page advises). A copy written by Python 3 has str keys: encoded here."""
    try:
        entry = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as error:
        raise DataError(f"{where}: {error}") from error
    except Exception as error:
        raise DataError(f"{where}: not a readable CIFAR pickle ({type(error).__name__}: {error})") from error
    if not isinstance(entry, dict):
        raise DataError(f"{where}: holds a {type(entry).__name__}, not the dict of the official CIFAR files")
    keyed = {}
    for key, value in entry.items():
        byte_key = key.encode() if isinstance(key, str) else key
        if byte_key in keyed:
            raise DataError(f"{where}: has the key {_key_text(key)} both as a byte string and as a str "
                            f"({_keys_found(entry)}); a CIFAR file has each key once")
        keyed[byte_key] = value
    return keyed


def _images(fmt: CifarFormat, entry: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 3072 bytes (1024 red, 1024 green, 1024 blue, each row-major) -> (N, 32, 32, 3) uint8."""
    missing = [key.decode() for key in (b"data", fmt.labels_key) if key not in entry]
    if missing:
        raise DataError(f"{where}: lacks the key(s) {', '.join(missing)} of the official {fmt.title} files "
                        f"({_keys_found(entry)})")
    data = np.asarray(entry[b"data"])
    labels = np.asarray(entry[fmt.labels_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{where}: data is {data.dtype} {data.shape} with {len(labels)} labels; the official files "
                        f"hold N x 3072 uint8 rows and N labels ({_keys_found(entry)})")
    if labels.size and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise DataError(f"{where}: labels span {labels.min()}..{labels.max()}; {fmt.title} has classes "
                        f"0..{fmt.num_classes - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _check_names(fmt: CifarFormat, meta: dict, where: str) -> None:
    """The meta member holds the list of class names (str or bytes) under ``fmt.names_key``."""
    expected = (f"the official {fmt.title} meta file has a list of {fmt.num_classes} class names under "
                f"{fmt.names_key.decode()}")
    if fmt.names_key not in meta:
        raise DataError(f"{where}: lacks the key {fmt.names_key.decode()}; {expected} ({_keys_found(meta)})")
    names = meta[fmt.names_key]
    if not isinstance(names, list):
        found = f"a {type(names).__name__}"
    elif len(names) != fmt.num_classes:
        found = f"{len(names)} entries"
    elif not all(isinstance(name, (str, bytes)) for name in names):
        found = "entries that are not strings"
    else:
        return
    raise DataError(f"{where}: {fmt.names_key.decode()} holds {found}; {expected} ({_keys_found(meta)})")


def read(source: Source) -> tuple[ImageSet, dict[str, str]]:
    """The images of a located copy and each member's md5, checked here on the very bytes that are used."""
    copy, fmt = source.copy, source.copy.fmt
    parts, digests, contents = {}, {}, copy.read(fmt.members)
    for member in fmt.members:
        data = contents[member]
        digests[member] = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if source.official:
            _check_md5(copy.where(member), digests[member], fmt.member_md5[member],
                       _replace_hint(fmt, "folder" if source.origin == "folder" else "path"))
        parts[member] = unpickle(data, copy.where(member))
    _check_names(fmt, parts[fmt.meta], copy.where(fmt.meta))

    def stacked(members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        pieces = [_images(fmt, parts[m], copy.where(m)) for m in members]
        return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])

    train_images, train_labels = stacked(fmt.train)
    test_images, test_labels = stacked(fmt.test)
    return ImageSet(train_images, train_labels, test_images, test_labels, fmt.num_classes), digests


def load_cifar(dataset: str | CifarFormat, root: str | Path = "data", download: bool = False,
               path: str | Path | None = None, unofficial_copy: str | Path | None = None,
               progress: Callable[[str], None] = print) -> tuple[ImageSet, dict]:
    """The verified image set of ``dataset`` ('cifar100', 'cifar10' or a CifarFormat) and the record of
    where it came from (for the results: location, whether the official md5s were checked, digests)."""
    fmt = FORMATS[dataset] if isinstance(dataset, str) else dataset
    source = locate(fmt, root, download, path, unofficial_copy, progress)
    images, digests = read(source)
    record = source.record(digests)
    progress(f"{fmt.title}: {len(images.train_labels)} train / {len(images.test_labels)} test images from "
             f"{record['location']}; {record['note']}")
    return images, record
