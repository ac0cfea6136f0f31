"""Real CIFAR data: the official format, md5 verification, offline use, and errors a user can act on.

CIFAR cannot be downloaded here, so each test builds a small release in the official layout: the
archive's top folder, its members pickled as Python 2 wrote them (byte strings, numpy arrays under
numpy.core.multiarray), the official keys, and `data` as N x 3072 uint8 rows (red plane, green plane,
blue plane, each row-major). Only the number of images differs, and so do the md5s: the checks are
pointed at the test release's own digests with CifarFormat.with_digests. No test touches the network.
"""

import dataclasses
import hashlib
import io
import json
import pickle
import pickletools
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import yaml

import bagmar.data.cifar as cifar
from project import copy_project, env
from bagmar.data.cifar import CIFAR10, CIFAR100, DataError, load_cifar
from bagmar.data.long_tail import REAL_DATASETS, SPEC_TOTALS, check_spec_counts, long_tailed_counts

ROOT = Path(__file__).parents[1]


# --------------------------------------------------------------------------- a release in the official format


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle wrote the official files: str as BINSTRING, numpy under numpy.core."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, 2).dump(obj)
    return buffer.getvalue()


def rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> the official (N, 3072) rows: all red, then all green, then all blue."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def make_images(labels: np.ndarray, seed: int) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    images[0] = 0  # the first image: a red, a green and a blue pixel at known places
    images[0, 0, 0] = (255, 0, 0)
    images[0, 0, 1] = (0, 255, 0)
    images[0, 1, 0] = (0, 0, 255)
    return images


def release_members(fmt) -> tuple[dict[str, bytes], dict]:
    """The members of a small release of ``fmt`` and the images and labels they hold."""
    c = fmt.num_classes
    names = [f"class_{i}".encode() for i in range(c)]
    if fmt is CIFAR100:
        train_labels, test_labels = np.tile(np.arange(c), 2), np.arange(c)
        train, test = make_images(train_labels, 1), make_images(test_labels, 2)

        def entry(images, labels, label):
            return {b"filenames": [b"img_%d.png" % i for i in range(len(labels))], b"batch_label": label,
                    b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": rows(images)}

        members = {
            "train": py2_pickle(entry(train, train_labels, b"training batch 1 of 1")),
            "test": py2_pickle(entry(test, test_labels, b"testing batch 1 of 1")),
            "meta": py2_pickle({b"fine_label_names": names, b"coarse_label_names": names[:20]}),
        }
    else:
        train_labels, test_labels = np.tile(np.arange(c), 5), np.arange(c)
        train, test = make_images(train_labels, 3), make_images(test_labels, 4)

        def entry(images, labels, label):
            return {b"batch_label": label, b"labels": labels.tolist(), b"data": rows(images),
                    b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}

        members = {f"data_batch_{i + 1}": py2_pickle(entry(train[10 * i: 10 * i + 10], train_labels[10 * i: 10 * i + 10],
                                                           b"training batch %d of 5" % (i + 1))) for i in range(5)}
        members["test_batch"] = py2_pickle(entry(test, test_labels, b"testing batch 1 of 1"))
        members["batches.meta"] = py2_pickle({b"num_cases_per_batch": 10, b"label_names": names, b"num_vis": 3072})
    truth = {"train_images": train, "train_labels": train_labels, "test_images": test, "test_labels": test_labels}
    return members, truth


def write_release(where: Path, fmt, members: dict[str, bytes]) -> tuple[Path, Path]:
    """The release as its extracted folder and as its .tar.gz, both under ``where``."""
    folder = where / fmt.folder
    folder.mkdir(parents=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    archive = where / fmt.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=fmt.folder)
    return archive, folder


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_release(tmp_path: Path, fmt) -> dict:
    """A test release under tmp_path/copy, and its format pointed at the release's own digests."""
    members, truth = release_members(fmt)
    archive, folder = write_release(tmp_path / "copy", fmt, members)
    checked = fmt.with_digests(cifar.md5sum(archive), {name: md5(data) for name, data in members.items()})
    return {"fmt": checked, "official": fmt, "archive": archive, "folder": folder, "truth": truth,
            "members": members, "root": tmp_path / "data"}


@pytest.fixture(params=[CIFAR100, CIFAR10], ids=["cifar100", "cifar10"])
def release(request, tmp_path):
    return make_release(tmp_path, request.param)


@pytest.fixture
def no_network(monkeypatch):
    """Every download fails as it does offline; the test fails if one is attempted unexpectedly via .calls."""
    calls = []

    def fail(url, destination):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "download", fail)
    return calls


# --------------------------------------------------------------------------- the format


def test_test_pickles_look_like_python2_official_files(release):
    data = release["members"][release["fmt"].train[0]]
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert not {name for name, _ in ops} & {"BINUNICODE", "SHORT_BINUNICODE"}  # Python 2 strings only
    assert pickle.loads(data, encoding="bytes")[b"data"].shape[1] == 3072


@pytest.mark.parametrize("where", ["archive", "folder", "root folder", "root archive"])
def test_reads_the_official_layout_with_labels_and_channel_order(release, where, no_network):
    fmt, truth, root = release["fmt"], release["truth"], release["root"]
    if where.startswith("root"):
        root.mkdir()
        source = release["archive"] if where == "root archive" else release["folder"]
        (shutil.copy if source.is_file() else shutil.copytree)(source, root / source.name)
        path = None
    else:
        path = release[where]
    images, record = load_cifar(fmt, root=root, download=False, path=path)

    assert images.num_classes == fmt.num_classes
    assert images.train_images.shape == (len(truth["train_labels"]), 32, 32, 3)
    assert images.train_images.dtype == np.uint8 and images.test_images.shape == (len(truth["test_labels"]), 32, 32, 3)
    assert np.array_equal(images.train_labels, truth["train_labels"])  # fine labels for CIFAR-100
    assert np.array_equal(images.test_labels, truth["test_labels"])
    assert np.array_equal(images.train_images, truth["train_images"])
    assert np.array_equal(images.test_images, truth["test_images"])
    first = images.train_images[0]
    assert first[0, 0].tolist() == [255, 0, 0]  # red at the top-left pixel
    assert first[0, 1].tolist() == [0, 255, 0]  # green to its right (rows are row-major)
    assert first[1, 0].tolist() == [0, 0, 255]  # blue below it
    assert int(first.sum()) == 3 * 255
    assert record["official_md5_verified"] is True and record["dataset"] == fmt.name
    assert record["member_md5"] == fmt.member_md5
    assert not no_network  # a local copy is never downloaded again


def test_the_unpickler_runs_no_code(tmp_path):
    evil = pickle.dumps({b"data": __import__("os").system}, protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        cifar.unpickle(evil, "somewhere/train")


class _WouldRunCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("given", ["archive", "folder"])
def test_a_crafted_member_that_would_run_code_is_refused(tmp_path, given):
    """Even an opted-in copy, which skips the md5s, cannot execute code when read."""
    marker = tmp_path / "code-ran"
    members, _ = release_members(CIFAR100)
    members["train"] = pickle.dumps({b"data": _WouldRunCode(marker), b"fine_labels": [0]}, protocol=2)
    archive, folder = write_release(tmp_path / "copy", CIFAR100, members)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_cifar("cifar100", root=tmp_path / "data", unofficial_copy=archive if given == "archive" else folder)
    assert not marker.exists()


def test_official_digests_are_the_published_ones():
    assert CIFAR100.archive_md5 == "eb9058c3a382ffc7106e4002c42a8d85"  # SPEC §1
    assert CIFAR100.member_md5 == {"train": "16019d7e3df5f24257cddd939b257f8d",
                                   "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                                   "meta": "7973b15100ade9c7d40fb424638fde48"}
    assert CIFAR10.archive_md5 == "c58f30108f718f92721af3b95e74349a"
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    listed = dict(TorchvisionCIFAR10.train_list + TorchvisionCIFAR10.test_list)
    listed[TorchvisionCIFAR10.meta["filename"]] = TorchvisionCIFAR10.meta["md5"]
    assert CIFAR10.member_md5 == listed and CIFAR10.archive_md5 == TorchvisionCIFAR10.tgz_md5


# --------------------------------------------------------------------------- md5 enforcement


def test_a_tampered_member_is_refused_and_left_in_place(release):
    fmt, folder = release["fmt"], release["folder"]
    member = folder / fmt.train[0]
    tampered = bytearray(member.read_bytes())
    tampered[-50] ^= 0xFF  # one pixel byte
    member.write_bytes(bytes(tampered))
    with pytest.raises(DataError) as error:
        load_cifar(fmt, root=release["root"], path=folder)
    message = str(error.value)
    assert str(member) in message
    assert fmt.member_md5[fmt.train[0]] in message and md5(bytes(tampered)) in message  # expected and found
    assert "left in place" in message and "official" in message
    assert member.read_bytes() == bytes(tampered)  # not deleted, not repaired


def test_a_tampered_member_inside_an_archive_is_refused(release, tmp_path):
    fmt, members = release["fmt"], dict(release["members"])
    name = fmt.test[0]
    members[name] = members[name][:-60] + bytes(60)
    archive, _ = write_release(tmp_path / "tampered", fmt, members)
    # the archive digest is the tampered archive's own, so the member check is the one that must catch it
    with pytest.raises(DataError, match=f"{fmt.folder}/{name}: md5 {md5(members[name])} does not match"):
        load_cifar(fmt.with_digests(archive_md5=cifar.md5sum(archive)), root=release["root"], path=archive)


def test_the_official_md5s_are_enforced_by_default(release):
    """Without test digests the test archive is what it is: not the official release."""
    archive, official = release["archive"], release["official"]
    before = archive.read_bytes()
    with pytest.raises(DataError) as error:
        load_cifar(official, root=release["root"], path=archive)
    message = str(error.value)
    assert str(archive) in message and official.archive_md5 in message and cifar.md5sum(archive) in message
    assert "dataset.unofficial_copy" in message  # the documented way to use such a copy anyway
    assert archive.read_bytes() == before


# --------------------------------------------------------------------------- errors a user can act on


def test_no_network_and_no_local_copy(tmp_path, no_network):
    root = tmp_path / "data"
    with pytest.raises(DataError) as error:
        load_cifar("cifar100", root=root, download=True)
    message = str(error.value)
    assert no_network == [CIFAR100.url]
    assert f"{root}/cifar-100-python/" in message and f"{root}/cifar-100-python.tar.gz" in message  # where it looked
    assert "copy the official cifar-100-python.tar.gz" in message and "dataset.path" in message  # the fix
    assert "name resolution" in message
    assert not any(root.iterdir())  # no half-downloaded file left behind


def test_an_unreachable_server_fails_fast_with_the_same_advice(tmp_path):
    """The real torchvision downloader, pointed at a port where nothing listens."""
    unreachable = dataclasses.replace(CIFAR10, url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="could not download CIFAR-10 .* copy the official cifar-10-python.tar.gz"):
        load_cifar(unreachable, root=tmp_path / "data", download=True)


def test_download_off_and_no_local_copy(tmp_path, no_network):
    with pytest.raises(DataError, match=r"dataset.download is false.*copy the official cifar-10-python.tar.gz"):
        load_cifar("cifar10", root=tmp_path / "data", download=False)
    assert not no_network


def test_a_download_is_verified_kept_and_never_repeated(release, monkeypatch):
    fmt, root = release["fmt"], release["root"]
    fetched = []

    def serve(url, destination):
        fetched.append(url)
        shutil.copy(release["archive"], destination)

    monkeypatch.setattr(cifar, "download", serve)
    load_cifar(fmt, root=root, download=True)
    assert (root / fmt.archive).read_bytes() == release["archive"].read_bytes()
    assert not (root / (fmt.archive + ".part")).exists()
    images, record = load_cifar(fmt, root=root, download=True)
    assert len(fetched) == 1 and record["origin"] == "archive"


def test_a_corrupt_download_is_refused_and_kept_for_inspection(release, monkeypatch):
    fmt, root = release["fmt"], release["root"]
    monkeypatch.setattr(cifar, "download", lambda url, destination: destination.write_bytes(b"<html>proxy</html>"))
    with pytest.raises(DataError) as error:
        load_cifar(fmt, root=root, download=True)
    partial = root / (fmt.archive + ".part")
    assert str(partial) in str(error.value) and fmt.archive_md5 in str(error.value) and "Delete it" in str(error.value)
    assert partial.read_bytes() == b"<html>proxy</html>" and not (root / fmt.archive).exists()


def test_a_folder_with_missing_members(release):
    fmt, folder = release["fmt"], release["folder"]
    (folder / fmt.meta).unlink()
    with pytest.raises(DataError) as error:
        load_cifar(fmt, root=release["root"], path=folder)
    message = str(error.value)
    assert str(folder) in message and f"lacks {fmt.meta}" in message and f"official {fmt.archive}" in message


def test_an_incomplete_folder_in_the_data_directory_is_not_bypassed(release, no_network):
    fmt, root = release["fmt"], release["root"]
    shutil.copytree(release["folder"], root / fmt.folder)
    (root / fmt.folder / fmt.test[0]).unlink()
    with pytest.raises(DataError, match=f"lacks {fmt.test[0]}.*move it away so that {root / fmt.archive} is used"):
        load_cifar(fmt, root=root, download=True)
    assert not no_network


@pytest.mark.parametrize("given", ["archive", "folder"])
def test_the_other_cifar_is_refused_as_the_wrong_data_set(tmp_path, given):
    members, _ = release_members(CIFAR10)
    archive, folder = write_release(tmp_path, CIFAR10, members)
    location = archive if given == "archive" else folder
    with pytest.raises(DataError) as error:
        load_cifar("cifar100", root=tmp_path / "data", path=location)
    message = str(error.value)
    assert str(location) in message and "holds CIFAR-10" in message and "dataset.name: cifar10" in message


def test_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "usb" / "cifar-100-python.tar.gz"
    with pytest.raises(DataError, match=f"dataset.path = {missing} does not exist"):
        load_cifar("cifar100", root=tmp_path / "data", path=missing)


# --------------------------------------------------------------------------- an unofficial copy, by opt-in


@pytest.mark.parametrize("given", ["archive", "folder"])
def test_an_unofficial_copy_is_used_only_by_name_and_recorded(release, given):
    official, location = release["official"], release[given]
    images, record = load_cifar(official, root=release["root"], unofficial_copy=location)
    assert np.array_equal(images.train_labels, release["truth"]["train_labels"])
    assert record["official_md5_verified"] is False and "UNOFFICIAL" in record["note"]
    assert record["location"] == str(location) and record["origin"] == "unofficial copy"
    assert record["member_md5"] == {name: md5(data) for name, data in release["members"].items()}


def test_an_unofficial_copy_must_still_be_the_right_data_set(tmp_path):
    members, _ = release_members(CIFAR10)
    archive, _ = write_release(tmp_path, CIFAR10, members)
    with pytest.raises(DataError, match="holds CIFAR-10"):
        load_cifar("cifar100", root=tmp_path / "data", unofficial_copy=archive)


def test_path_and_unofficial_copy_together_are_refused(release):
    with pytest.raises(DataError, match="set only one"):
        load_cifar(release["fmt"], path=release["archive"], unofficial_copy=release["folder"])


# --------------------------------------------------------------------------- the long-tailed cut of the real sets


@pytest.mark.parametrize("dataset, imbalance_factor, total", [
    ("cifar100", 200, 9502), ("cifar100", 100, 10847), ("cifar100", 50, 12608), ("cifar100", 10, 19573),
    ("cifar10", 100, 12406),
])
def test_spec_totals_are_checked_at_run_time(dataset, imbalance_factor, total):
    num_classes, per_class = REAL_DATASETS[dataset]
    counts = long_tailed_counts(num_classes, per_class, imbalance_factor)
    assert sum(counts) == total == SPEC_TOTALS[dataset][imbalance_factor]
    check_spec_counts(dataset, float(imbalance_factor), counts)  # passes
    short = [counts[0] - 1, *counts[1:]]
    with pytest.raises(DataError, match=f"{total - 1} images.*SPEC §1 requires {total}"):
        check_spec_counts(dataset, float(imbalance_factor), short)


def test_cifar10_lt_at_if_100_is_12406_images_with_50_in_the_last_class():
    counts = long_tailed_counts(10, 5000, 100)
    assert counts[0] == 5000 and counts[-1] == 50 and sum(counts) == 12406


def test_synthetic_sets_are_not_held_to_the_cifar_totals():
    check_spec_counts("synthetic", 100.0, [50, 5])


# --------------------------------------------------------------------------- in the workflow


def workflow_on(tmp_path: Path, dataset: dict, *args: str) -> tuple[Path, subprocess.CompletedProcess]:
    """The demo's configuration on a CIFAR data set, run (or dry-run) in a copy of the project."""
    workdir = copy_project(tmp_path / "project")
    config = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    config.update(run_name="cifar_test", dataset=dataset)
    config["report"]["readme"] = None
    (workdir / "config" / "test.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/test.yaml", *args],
                         cwd=workdir, capture_output=True, text=True, timeout=300, env=env(workdir))
    return workdir / "results" / "cifar_test", run


@pytest.mark.workflow
def test_the_workflow_stops_at_a_bad_archive_before_any_training(tmp_path):
    release = make_release(tmp_path, CIFAR100)
    results, run = workflow_on(tmp_path, {"name": "cifar100", "path": str(release["archive"])})
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"{release['archive']}: md5 {cifar.md5sum(release['archive'])} does not match the official" in output
    assert not (results / "train").exists() and not (results / "splits").exists()


@pytest.mark.workflow
def test_an_unofficial_copy_is_recorded_and_the_split_checks_the_spec_totals(tmp_path):
    """The copy is read (by opt-in) and recorded; being tiny, it cannot give SPEC §1's cut, so the split stops."""
    release = make_release(tmp_path, CIFAR100)
    results, run = workflow_on(tmp_path, {"name": "cifar100", "unofficial_copy": str(release["folder"])})
    output = run.stdout + run.stderr
    assert run.returncode != 0
    record = json.loads((results / "data" / "provenance.json").read_text())
    assert record["official_md5_verified"] is False and record["location"] == str(release["folder"])
    assert "UNOFFICIAL COPY" in (results / "logs" / "cifar100_dataset.log").read_text()
    assert "SPEC §1 requires" in output and not (results / "train").exists()


@pytest.mark.workflow
def test_cifar10_is_a_config_value_with_its_own_acquisition_job(tmp_path):
    results, run = workflow_on(tmp_path, {"name": "cifar10"}, "-n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "cifar10_dataset" in run.stdout and "cifar100_dataset" not in run.stdout
    assert not results.exists()


# --------------------------------------------------------------------------- copies written by Python 3


def py3_members(fmt, keys: type, protocol: int) -> tuple[dict[str, bytes], dict]:
    """The test release re-written by Python 3's own pickle: str (or byte) keys, str class names and batch labels."""
    members, truth = release_members(fmt)

    def rewritten(value):
        if isinstance(value, dict):
            return {(key.decode() if keys is str else key): rewritten(item) for key, item in value.items()}
        if isinstance(value, list) and value and isinstance(value[0], bytes) and value[0].startswith(b"class_"):
            return [name.decode() for name in value]
        return value.decode() if isinstance(value, bytes) and value.startswith((b"train", b"test")) else value

    return {name: pickle.dumps(rewritten(pickle.loads(data, encoding="bytes")), protocol=protocol)
            for name, data in members.items()}, truth


def globals_referenced(data: bytes) -> set[str]:
    ops, found = list(pickletools.genops(data)), set()
    strings = []
    for op, arg, _ in ops:
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
    return found


@pytest.mark.parametrize("keys", [str, bytes], ids=["str keys", "byte keys"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_a_copy_written_by_python3_loads_like_the_official_format(tmp_path, keys, protocol):
    members, truth = py3_members(CIFAR10, keys, protocol)
    batch = members["data_batch_1"]
    assert ("_codecs.encode" in globals_referenced(batch)) == (protocol == 2)  # how Python 3 writes bytes in 2
    assert isinstance(next(iter(pickle.loads(batch))), keys)
    _, folder = write_release(tmp_path / "py3", CIFAR10, members)
    images, record = load_cifar("cifar10", root=tmp_path / "data", unofficial_copy=folder)

    official_form, _ = release_members(CIFAR10)
    _, py2_folder = write_release(tmp_path / "py2", CIFAR10, official_form)
    reference, _ = load_cifar("cifar10", root=tmp_path / "data", unofficial_copy=py2_folder)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(images, field), truth[field])
        assert np.array_equal(getattr(images, field), getattr(reference, field))
    assert images.num_classes == 10 and record["official_md5_verified"] is False


def test_a_python3_cifar100_copy_in_an_archive_loads(tmp_path):
    members, truth = py3_members(CIFAR100, str, 2)
    archive, _ = write_release(tmp_path / "py3", CIFAR100, members)
    images, _ = load_cifar("cifar100", root=tmp_path / "data", unofficial_copy=archive)
    assert np.array_equal(images.train_images, truth["train_images"])
    assert np.array_equal(images.test_labels, truth["test_labels"])


class _Reduces:
    """Pickles as ``function(*args)``."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload, named", [
    (_Reduces(eval, "1 + 1"), r"(builtins|__builtin__)\.eval"),
    (_Reduces(__import__("os").system, "true"), r"(posix|os|nt)\.system"),
    (_Reduces(__import__, "os"), r"(builtins|__builtin__)\.__import__"),
    (_Reduces(np.frombuffer, b"\0" * 3072, np.uint8), r"numpy.*\.frombuffer"),
], ids=["eval", "os.system", "__import__", "numpy.frombuffer"])
def test_a_member_referencing_another_global_is_refused_naming_it(tmp_path, payload, named, protocol):
    members, _ = py3_members(CIFAR10, str, protocol)
    members["data_batch_2"] = pickle.dumps({"data": payload, "labels": [0]}, protocol=protocol)
    _, folder = write_release(tmp_path, CIFAR10, members)
    with pytest.raises(DataError, match=rf"data_batch_2: refusing to unpickle {named}: .*reference only") as error:
        load_cifar("cifar10", root=tmp_path / "data", unofficial_copy=folder)
    assert "_codecs.encode" in str(error.value)  # the message lists what is admitted


@pytest.mark.parametrize("args, shown", [
    ((b"abc", "latin1"), "b'abc', 'latin1'"),  # bytes, not str
    (("abc", "rot13"), "'abc', 'rot13'"),  # another codec
    (("x", "zlib"), "'x', 'zlib'"),  # a codec the registry would import a module for
    (("abc", "latin-1"), "'abc', 'latin-1'"),  # Python writes 'latin1' only
    ((["a"], "latin1"), "<list>, 'latin1'"),
])
def test_codecs_encode_is_admitted_only_as_python3_writes_bytes(args, shown):
    import codecs

    data = pickle.dumps({"data": _Reduces(codecs.encode, *args)}, protocol=2)
    with pytest.raises(DataError, match=re.escape(f"somewhere/train: refusing to unpickle _codecs.encode({shown})")):
        cifar.unpickle(data, "somewhere/train")
    assert cifar.unpickle(pickle.dumps({"x": b"\x00\xff" * 3}, protocol=2), "ok") == {b"x": b"\x00\xff" * 3}


def test_a_meta_file_without_the_class_names_lists_the_keys_found(tmp_path):
    members, _ = py3_members(CIFAR10, str, 4)
    members["batches.meta"] = pickle.dumps({"num_cases_per_batch": 10, "num_vis": 3072, "names": []}, protocol=4)
    _, folder = write_release(tmp_path, CIFAR10, members)
    with pytest.raises(DataError) as error:
        load_cifar("cifar10", root=tmp_path / "data", unofficial_copy=folder)
    message = str(error.value)
    assert f"{folder / 'batches.meta'}: lacks the key label_names" in message
    assert "list of 10 class names under label_names" in message
    assert "keys found: names, num_cases_per_batch, num_vis" in message
    assert "this is not" not in message  # the old, misleading wording


@pytest.mark.parametrize("names, found", [([b"a"] * 9, "9 entries"), ("airplane", "a bytes"),
                                          ([1] * 10, "entries that are not strings")])
def test_a_wrong_class_name_list_says_what_it_holds(tmp_path, names, found):
    members, _ = release_members(CIFAR10)
    members["batches.meta"] = py2_pickle({b"label_names": names, b"num_vis": 3072})
    _, folder = write_release(tmp_path, CIFAR10, members)
    with pytest.raises(DataError, match=f"label_names holds {found}; the official CIFAR-10 meta file has a list of 10 "
                                        r"class names under label_names \(keys found: label_names, num_vis\)"):
        load_cifar("cifar10", root=tmp_path / "data", unofficial_copy=folder)


def test_a_batch_with_wrong_keys_lists_the_keys_found(tmp_path):
    members, _ = py3_members(CIFAR10, str, 2)
    members["test_batch"] = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0], 7: 0}, protocol=2)
    _, folder = write_release(tmp_path, CIFAR10, members)
    with pytest.raises(DataError, match=r"test_batch: lacks the key\(s\) labels of the official CIFAR-10 files "
                                        r"\(keys found: 7, data, fine_labels\)"):
        load_cifar("cifar10", root=tmp_path / "data", unofficial_copy=folder)


def test_a_key_given_both_as_str_and_as_bytes_is_refused():
    with pytest.raises(DataError, match="has the key labels both as a byte string and as a str"):
        cifar.unpickle(pickle.dumps({"labels": [0], b"labels": [1]}, protocol=4), "somewhere/test_batch")
