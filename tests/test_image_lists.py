"""The large benchmarks' split lists (bagmar.data.image_lists): parsing, verification, missing images.

The real lists are read from ../shared/data/lt_lists/ when that folder exists (a check of the parser and the
recorded facts; skipped elsewhere). Everything else runs on miniature lists written here.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from bagmar.data import image_lists
from bagmar.data.image_lists import DATASETS, SplitFacts, read_list, require_images, verify_list
from bagmar.io import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lt_lists"
REAL = {  # file -> (data set, split)
    "Places_LT_train.txt": ("places_lt", "train"),
    "Places_LT_val.txt": ("places_lt", "val"),
    "Places_LT_test.txt": ("places_lt", "test"),
    "ImageNet_LT_val.txt": ("imagenet_lt", "val"),
    "ImageNet_LT_test.txt": ("imagenet_lt", "test"),
    "iNaturalist18_val.txt": ("inat2018", "val"),
}


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (the real split lists) is not on this machine")
@pytest.mark.parametrize("name", sorted(REAL))
def test_the_real_lists_give_the_recorded_counts_and_digests(name):
    dataset, split = REAL[name]
    image_list = verify_list(SHARED / name, dataset, split)
    facts = DATASETS[dataset]
    assert len(image_list.images) == facts.splits[split].images
    counts = image_list.class_counts(facts.classes)
    assert (counts > 0).all() and len(counts) == facts.classes
    assert image_list.images[0].startswith(("train/", "val/", "test/", "train_val2018/"))


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (the real split lists) is not on this machine")
def test_the_released_codes_training_counts_are_the_recorded_extremes():
    import json
    for name, dataset in [("ImageNet_LT.json", "imagenet_lt"), ("Places_LT.json", "places_lt"),
                          ("iNaturalist18.json", "inat2018")]:
        counts = json.loads((SHARED / name).read_text())
        train = DATASETS[dataset].splits["train"]
        assert (len(counts), sum(counts), max(counts), min(counts)) == (DATASETS[dataset].classes, train.images,
                                                                         train.largest, train.smallest)
    places = read_list(SHARED / "Places_LT_train.txt", 365).class_counts(365)
    assert places.tolist() == json.loads((SHARED / "Places_LT.json").read_text())


def write_list(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_a_list_reads_into_paths_and_labels(tmp_path):
    image_list = read_list(write_list(tmp_path / "l.txt", ["train/a/1.jpg 0", "train/b c/2.jpg 2"]), 3)
    assert image_list.images == ("train/a/1.jpg", "train/b c/2.jpg")  # a space inside a path is kept
    assert image_list.labels.tolist() == [0, 2] and image_list.labels.dtype == np.int64
    assert image_list.class_counts(3).tolist() == [1, 0, 1]


@pytest.mark.parametrize("lines, message", [
    (["train/a.jpg 0", "train/b.jpg 3"], r"l.txt:2: label 3 is outside 0..2 \(train/b.jpg\)"),
    (["train/a.jpg 0", "train/a.jpg 1"], r"l.txt:2: train/a.jpg is listed twice \(first on line 1\)"),
    (["train/a.jpg 0", "train/b.jpg"], r"l.txt:2: expected '<relative/path> <integer label>', got 'train/b.jpg'"),
    (["train/a.jpg x"], r"l.txt:1: expected '<relative/path> <integer label>'"),
    (["train/a.jpg -1"], r"l.txt:1: label -1 is outside 0..2"),
    ([], r"l.txt: the list is empty"),
])
def test_a_bad_line_stops_with_its_file_and_line(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        read_list(write_list(tmp_path / "l.txt", lines), 3)


@pytest.fixture
def miniature(tmp_path, monkeypatch):
    """A 3-class data set's facts in DATASETS, and its training list (counts 4, 2, 1)."""
    lines = [f"train/{c}/{i}.jpg {c}" for c, n in enumerate((4, 2, 1)) for i in range(n)]
    path = write_list(tmp_path / "train.txt", lines)
    facts = image_lists.DatasetFacts("Mini-LT", 3, {"train": SplitFacts(7, largest=4, smallest=1),
                                                    "val": SplitFacts(7, hashlib.sha256(path.read_bytes()).hexdigest())})
    monkeypatch.setitem(DATASETS, "mini", facts)
    return path, lines


def test_verification_checks_count_extremes_and_digest(miniature, tmp_path):
    path, lines = miniature
    assert verify_list(path, "mini", "train").class_counts(3).tolist() == [4, 2, 1]
    assert len(verify_list(path, "mini", "val").images) == 7  # the digest matches
    short = write_list(tmp_path / "short.txt", lines[1:])
    with pytest.raises(DataError, match=r"short.txt: not Mini-LT's train list: 6 images, not 7; the largest class "
                                        r"has 3 images, not 4"):
        verify_list(short, "mini", "train")
    with pytest.raises(DataError, match=r"short.txt: sha256 [0-9a-f]{64}, not Mini-LT's val list"):
        verify_list(short, "mini", "val")
    no_tail = write_list(tmp_path / "no_tail.txt", [line for line in lines if not line.endswith(" 2")])
    with pytest.raises(DataError, match=r"1 of 3 classes have no image \(first: \[2\]\)"):
        verify_list(no_tail, "mini", "train")
    with pytest.raises(DataError, match="Mini-LT has no 'test' list; its lists: train, val"):
        verify_list(path, "mini", "test")


def test_missing_images_are_counted_and_named_before_any_training(miniature, tmp_path):
    path, lines = miniature
    image_list = read_list(path, 3)
    root = tmp_path / "images"
    for image in image_list.images[2:]:
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        (root / image).write_bytes(b"\xff\xd8")
    with pytest.raises(DataError, match=r"2 of the 7 images of .*train.txt are missing under .*images "
                                        r"\(first: .*train.txt:1 train/0/0.jpg, .*train.txt:2 train/0/1.jpg\)"):
        require_images(image_list, root)
    for image in image_list.images[:2]:
        (root / image).write_bytes(b"\xff\xd8")
    require_images(image_list, root)  # all there: no error


def test_a_miniature_in_the_benchmarks_layout_verifies_like_the_real_lists(tmp_path, monkeypatch):
    from PIL import Image

    from bagmar.data.long_tail import long_tailed_counts
    facts = image_lists.write_miniature(tmp_path / "a", classes=6, imbalance_factor=10, max_per_class=20,
                                        val_per_class=2, test_per_class=3, image_size=16)
    monkeypatch.setitem(DATASETS, "mini", facts)
    counts = long_tailed_counts(6, 20, 10)
    assert facts.splits["train"] == SplitFacts(sum(counts), facts.splits["train"].sha256, 20, 2)
    assert (facts.splits["val"].images, facts.splits["test"].images) == (12, 18)
    for split in ("train", "val", "test"):
        image_list = verify_list(tmp_path / "a" / f"Mini_LT_{split}.txt", "mini", split)
        require_images(image_list, tmp_path / "a")
    train = read_list(tmp_path / "a" / "Mini_LT_train.txt", 6)
    assert train.class_counts(6).tolist() == counts
    with Image.open(tmp_path / "a" / train.images[-1]) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (16, 16))
    again = image_lists.write_miniature(tmp_path / "b", classes=6, imbalance_factor=10, max_per_class=20,
                                        val_per_class=2, test_per_class=3, image_size=16)
    assert again == facts  # the same lists, byte for byte
    assert (tmp_path / "b" / train.images[-1]).read_bytes() == (tmp_path / "a" / train.images[-1]).read_bytes()


def test_a_list_absent_locally_is_downloaded_whole_else_the_error_names_file_folder_and_fix(tmp_path):
    """Through the project's downloader (torchvision's, as for CIFAR) from an HTTP server on localhost."""
    import functools
    import http.server
    import threading

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "Places_LT_val.txt").write_text("val/a/1.jpg 0\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{{file}}"
    lists = tmp_path / "lists"
    try:
        fetched = image_lists.fetch_list("Places_LT_val.txt", lists, url)
        assert fetched == lists / "Places_LT_val.txt" and fetched.read_text() == "val/a/1.jpg 0\n"
        (mirror / "Places_LT_val.txt").write_text("changed 1\n")
        assert image_lists.fetch_list("Places_LT_val.txt", lists, url).read_text() == "val/a/1.jpg 0\n"  # local first
        with pytest.raises(DataError, match=r"Places_LT_test.txt is not in .*lists and no dataset.image_list.url is set"):
            image_lists.fetch_list("Places_LT_test.txt", lists, None)
        with pytest.raises(DataError, match=r"Places_LT_test.txt: download from http://127.0.0.1:\d+/Places_LT_test.txt "
                                            r"failed \(HTTPError: .*404.*\); copy the list into .*lists instead"):
            image_lists.fetch_list("Places_LT_test.txt", lists, url)
    finally:
        server.shutdown()
    assert sorted(p.name for p in lists.iterdir()) == ["Places_LT_val.txt"]  # no partial file left behind
