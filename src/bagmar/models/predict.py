"""``python -m bagmar predict``: classify images with a model this pipeline wrote (model.safetensors + model.json).

    python -m bagmar predict --model results/demo/train/BaGMar_pn/imba100/seed0 --images DIR_OR_LIST \\
        [--tau T] [--top-k 5] [--output predictions.csv]

``--images``: a folder (every .png, .jpg and .jpeg under it, in sorted order) or an image list (one relative path
a line, optionally followed by a label, as the large benchmarks' lists are written; paths relative to ``--root``,
by default the list's folder). The scores are PN's (the card's tau unless --tau is given: chosen on the
validation list where the data set has one, else label-free; --tau 0: plain softmax), over the images given
together: PN divides by each class's mass over a set, so give the whole set at once.
The CSV has one row per image: image, then class_1, score_1, ... class_k, score_k (classes as indices).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from ..io import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_paths(images: str | Path, root: str | Path | None = None) -> list[Path]:
    """The images a folder holds, or a list names (relative to ``root``, by default the list's folder); an empty
    set or a missing file is an error naming it."""
    images = Path(images)
    if images.is_dir():
        found = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UserError(f"{images}: no {', '.join(IMAGE_SUFFIXES)} files in this folder")
        return found
    if not images.is_file():
        raise UserError(f"{images}: no such folder or image list")
    base = Path(root) if root is not None else images.parent
    found = [base / _listed_path(line) for line in images.read_text().splitlines() if line.strip()]
    missing = [p for p in found if not p.is_file()]
    if missing:
        raise UserError(f"{images}: {len(missing)} listed image(s) missing, the first {missing[0]}")
    return found


def _listed_path(line: str) -> str:
    """A list line's path: the whole line, or all of it but a trailing integer label (paths may hold spaces)."""
    path, _, last = line.strip().rpartition(" ")
    return path if path and last.lstrip("-").isdigit() else line.strip()


def read_images(paths: list[Path]) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_image

    out = []
    for path in paths:
        try:
            out.append(decode_image(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8),
                                    mode=ImageReadMode.RGB))
        except RuntimeError as error:
            raise UserError(f"{path}: cannot be decoded ({str(error).strip().splitlines()[-1]})") from None
    return out


def predict(model: str | Path, images: str | Path, output: str | Path, tau: float | None = None,
            top_k: int = 5, root: str | Path | None = None) -> Path:
    """Write the CSV of ``images``' top-k classes and PN scores under ``model``; returns its path."""
    from ..io import atomic_write
    from .files import classify, load_model

    network, card = load_model(model)
    paths = image_paths(images, root)
    scores = classify(network, card, read_images(paths), tau)
    k = min(top_k, scores.shape[1])
    values, classes = scores.topk(k, dim=1)
    with atomic_write(output) as f:
        writer = csv.writer(f)
        writer.writerow(["image", *(f"{kind}_{i + 1}" for i in range(k) for kind in ("class", "score"))])
        for path, row_classes, row_values in zip(paths, classes.tolist(), values.tolist()):
            writer.writerow([str(path), *(v for pair in zip(row_classes, (f"{s:.6g}" for s in row_values))
                                          for v in pair)])
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bagmar predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model.safetensors, its model.json, or their folder")
    parser.add_argument("--images", required=True, help="a folder of images, or an image list")
    parser.add_argument("--tau", type=float, default=None,
                        help="PN's tau (default: the card's, val-selected or label-free)")
    parser.add_argument("--root", default=None, help="an image list's root (default: the list's folder)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--output", default="predictions.csv")
    args = parser.parse_args(argv)
    try:
        written = predict(args.model, args.images, args.output, args.tau, args.top_k, args.root)
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0
