"""Models in and out: released checkpoints read safely into ResNet-32, and trained models as safetensors with a
card, loaded with bagmar.load_model and used by `python -m bagmar predict`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import bagmar
from bagmar.method.model import ResNet32
from bagmar.models import released
from bagmar.models.files import ModelFileError, classify, export, network_card, prepare_images, sha256
from bagmar.models.released import CheckpointError, from_resnet32, load_released_resnet32


def random_resnet32(num_classes=100, width=16, seed=0) -> ResNet32:
    torch.manual_seed(seed)
    network = ResNet32(num_classes, width)
    for module in network.modules():  # BatchNorm statistics that are not the defaults, so that they must load
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return network.eval()


def test_a_released_layout_checkpoint_loads_into_resnet32_with_the_same_logits(tmp_path):
    """The released save_model layout (state_dict_best's feat_model and classifier, DataParallel's module.
    prefixes, layer1..3 and fc), written from a random ResNet-32 through the inverse mapping."""
    network = random_resnet32()
    checkpoint = from_resnet32(network.state_dict(), best_epoch=187, best_acc=0.481)
    assert set(checkpoint) == set(released.CHECKPOINT_KEYS)
    assert "module.layer3.4.bn2.running_var" in checkpoint["state_dict_best"]["feat_model"]
    assert set(checkpoint["state_dict_best"]["classifier"]) == {"module.fc.weight", "module.fc.bias"}
    torch.save(checkpoint, tmp_path / "final_model_checkpoint.pth")
    loaded = load_released_resnet32(tmp_path / "final_model_checkpoint.pth", 100)
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(loaded.double()(x), network.double()(x), rtol=0, atol=1e-6)
    assert not loaded.training


def test_a_checkpoint_of_another_class_count_or_network_names_the_first_key(tmp_path):
    torch.save(from_resnet32(random_resnet32(num_classes=10).state_dict()), tmp_path / "ten.pth")
    with pytest.raises(CheckpointError, match=r"ten.pth: state_dict_best\['classifier'\]\['module.fc.weight'\] is "
                                              r"\(10, 64\), ResNet-32 with 100 classes needs \(100, 64\)"):
        load_released_resnet32(tmp_path / "ten.pth", 100)
    torch.save({"model": random_resnet32().state_dict()}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other.pth: not in the released layout .*found \['model'\]"):
        load_released_resnet32(tmp_path / "other.pth", 100)


class _RunsCode:
    """What a malicious checkpoint holds: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    checkpoint = from_resnet32(random_resnet32().state_dict())
    checkpoint["state_dict_best"]["classifier"]["module.fc.weight"] = _RunsCode(marker)
    with open(tmp_path / "crafted.pth", "wb") as f:
        torch.save(checkpoint, f)
    with pytest.raises(CheckpointError, match=r"crafted.pth: refused: it holds more than tensors and plain values"):
        load_released_resnet32(tmp_path / "crafted.pth", 100)
    assert not marker.exists()
    torch.load(tmp_path / "crafted.pth", weights_only=False)  # the file does run code when fully unpickled
    assert marker.exists()


@pytest.fixture
def exported(tmp_path):
    """A ResNet-32 written as a training writes it (model.pt, test_logits.npz), then exported."""
    network = random_resnet32(num_classes=10, width=4)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        logits = network(prepare_images(images, {"network": {"kind": "resnet32"}, "input": {"resize": None, "crop": 16}}))
    labels = np.arange(40) % 10
    np.savez(tmp_path / "test_logits.npz", logits=logits.numpy(), labels=labels)
    counts = [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]
    recipe = {"width": 4, "loss": "bagmar", "lambda1": 1.2, "lambda2": 0.9, "seed": 0}
    about = {"training": "BaGMar_pn", "dataset": "synthetic", "imbalance_factor": 100.0, "seed": 0, "recipe": recipe,
             "split_sha256": "0" * 64, "code": {"train.py": "abc"}, **network_card(recipe, 10, False, 16)}
    card = export(tmp_path / "model.pt", tmp_path / "test_logits.npz", counts, tmp_path / "model.safetensors",
                  tmp_path / "model.json", about, [0.0, 0.5, 1.0, 1.5, 2.0])
    return tmp_path, network, images, logits, card


def test_an_exported_model_loads_with_its_card_and_gives_the_training_logits(exported):
    folder, network, images, logits, card = exported
    assert json.loads((folder / "model.json").read_text()) == card
    assert card["weights"]["sha256"] == sha256(folder / "model.safetensors")
    assert card["class_prior"] == pytest.approx(np.array(card["class_counts"]) / 250)
    assert card["tau"] == card["figures"]["label_free_tau"] in (0.0, 0.5, 1.0, 1.5, 2.0)
    assert card["tau_rule"] == "label_free" and "val_selected_tau" not in card["figures"]  # no validation list
    for path in (folder, folder / "model.safetensors", folder / "model.json"):
        loaded, loaded_card = bagmar.load_model(path)
        assert loaded_card == card and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(prepare_images(images, card)), logits)


def test_a_changed_weights_file_is_refused(exported):
    folder = exported[0]
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="its sha256 is not the one its card"):
        bagmar.load_model(folder)


def test_predict_on_a_folder_of_pngs_is_load_model_plus_pn(exported, tmp_path):
    from torchvision.io import write_png

    folder, _, images, _, card = exported
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, image in enumerate(images[:12]):
        write_png(image, str(pictures / f"{i:02d}.png"))
    out = tmp_path / "predictions.csv"
    run = subprocess.run([sys.executable, "-m", "bagmar", "predict", "--model", str(folder), "--images",
                          str(pictures), "--tau", "1.0", "--top-k", "3", "--output", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    import pandas as pd

    table = pd.read_csv(out)
    network, _ = bagmar.load_model(folder)
    with torch.no_grad():
        probabilities = torch.softmax(network(prepare_images(images[:12], card)).double(), dim=1)
    pn = probabilities / probabilities.sum(0) ** 1.0  # PN (SPEC §5) over the twelve images
    pn = pn / pn.sum(1, keepdim=True)
    assert list(table["image"]) == [str(pictures / f"{i:02d}.png") for i in range(12)]
    assert table[["class_1", "class_2", "class_3"]].to_numpy().tolist() == pn.topk(3, dim=1).indices.tolist()
    assert table["score_1"].to_numpy() == pytest.approx(pn.max(1).values.numpy(), rel=1e-5)
    assert torch.allclose(classify(network, card, images[:12], 1.0), pn, atol=1e-12)


def test_predict_names_what_is_missing(tmp_path, exported):
    run = subprocess.run([sys.executable, "-m", "bagmar", "predict", "--model", str(exported[0]), "--images",
                          str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.strip() == f"Error: {tmp_path / 'nowhere'}: no such folder or image list"


# --------------------------------------------------------------------------- the released models through the DAG

STAND_IN_FACTORS = (200, 10)


@pytest.fixture(scope="module")
def released_run(tmp_path_factory):
    """config/released_models.yaml on stand-ins: random ResNet-32s written in the released layout at the config's
    paths, tested on a generated CIFAR-100-shaped set (100 classes of 32 x 32 images); another run's paper-format
    table in place for report.compare_with."""
    import pandas as pd
    import yaml
    from project import copy_project, edit_config, snakemake

    workdir = copy_project(tmp_path_factory.mktemp("released"))
    config = yaml.safe_load((workdir / "config" / "released_models.yaml").read_text())
    networks = {}
    for factor in STAND_IN_FACTORS:
        networks[factor] = random_resnet32(seed=factor)
        path = workdir / config["trainings"]["released"]["released"][factor]["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(from_resnet32(networks[factor].state_dict(), best_epoch=190 - factor), path)
    edit_config(workdir / "config" / "released_models.yaml", lambda c: c.update(
        imbalance_factors=list(STAND_IN_FACTORS),
        dataset={"name": "synthetic", "synthetic": {"num_classes": 100, "train_per_class": 200, "test_per_class": 10,
                                                    "image_size": 32}}))
    other = workdir / "results" / "cifar100_lt" / "tables"
    other.mkdir(parents=True)
    pd.DataFrame([{"imbalance_factor": 200.0, "top1": 47.1, "top1_std": 0.3, "n_seeds": 3, "test_best_top1": 47.6,
                   "test_best_tau": 1.4}]).to_csv(other / "paper_table.csv", index=False)
    run = snakemake(workdir, "--configfile", "config/released_models.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    return workdir, networks


@pytest.mark.workflow
def test_the_released_models_run_gives_each_checkpoints_own_logits(released_run):
    from bagmar.data.augment import test_transform
    from bagmar.data.long_tail import ImageSet

    workdir, networks = released_run
    results = workdir / "results" / "released_models"
    images = ImageSet.load(results / "data" / "images.npz")
    test = torch.as_tensor(images.test_images).permute(0, 3, 1, 2)
    for factor, network in networks.items():
        saved = np.load(results / "train" / "released" / f"imba{factor}" / "seed0" / "test_logits.npz")
        with torch.no_grad():
            expected = network(test_transform(test)).numpy()
        assert np.allclose(saved["logits"], expected, rtol=0, atol=1e-6)
        assert int(saved["final_epoch"]) == 190 - factor  # the checkpoint's best epoch
    assert not list(results.glob("train/released/*/*/model.safetensors"))  # the authors' files are not re-issued


@pytest.mark.workflow
def test_the_released_models_table_has_every_column(released_run):
    workdir, _ = released_run
    section = (workdir / "results" / "released_models" / "tables" / "results.md").read_text()
    assert "test-selected best epoch" in section  # report.note, under the title
    assert "final-epoch top-1 (%) (a released checkpoint's rows: its test-selected best epoch)" in section
    assert ("| Imbalance Factor | Ours (τ=1) | Paper (τ=1) | Δ | Ours (fine-tune τ) | Paper (fine-tune τ) | Δ | "
            "`cifar100_lt` (τ=1) | `cifar100_lt` (fine-tune τ) |") in section
    rows = [line for line in section.splitlines() if line.startswith("| 200 |") or line.startswith("| 10 |")]
    assert any("| 47.4 |" in r and "| 47.1 ± 0.3 | 47.6 (τ=1.4) |" in r for r in rows)  # paper, and the other run
    assert any(r.startswith("| 10 |") and "| 62.5 |" in r and r.endswith("| – | – |") for r in rows)
    for variant, rule in [("released", "plain"), ("released_pn", "PN τ=1"), ("released_la", "post-hoc LA τ=1"),
                          ("released_tau_norm", "τ-norm τ=1")]:
        assert f"| {variant} | released | {rule} |" in section
    assert "48 [1]" in section and "63.8 [1]" in section  # the README's figures beside these checkpoints
    for plot in ("training_curves", "theta", "tau_sweep", "methods"):
        assert (workdir / "results" / "released_models" / "plots" / f"{plot}.png").stat().st_size > 0


@pytest.mark.workflow
def test_missing_released_checkpoints_are_named_with_their_links_before_any_job(tmp_path):
    from project import copy_project, snakemake

    workdir = copy_project(tmp_path)
    run = snakemake(workdir, "-n", "--configfile", "config/released_models.yaml")
    lines = [line for line in run.stderr.splitlines() if line.startswith("  - ")]
    assert run.returncode != 0 and len(lines) == 4, run.stderr
    assert lines[0] == ("  - trainings.released.released.200: data/released/cifar100_imba200.pth is missing; download "
                        "it from https://drive.google.com/file/d/1lDfddC2idKjjblrivlZKRY2RNuUUvjAR/view?usp=sharing and "
                        "place it there")
    assert "Traceback" not in run.stderr


def test_a_released_training_takes_a_file_per_imbalance_factor_and_nothing_else(tmp_path):
    import copy

    import yaml

    from bagmar.config import problems

    config = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "config", "released_models.yaml")))
    for entry in config["trainings"]["released"]["released"].values():  # the four files, present
        entry["path"] = str(tmp_path / os.path.basename(entry["path"]))
        open(entry["path"], "wb").close()
    assert problems(copy.deepcopy(config)) == []
    changed = copy.deepcopy(config)
    changed["trainings"]["released"].update(epochs=3)
    del changed["trainings"]["released"]["released"][50]
    assert problems(changed) == [
        "trainings.released.epochs: a released training takes no other setting (its checkpoint is as trained)",
        "trainings.released.released has no checkpoint for imbalance factor 50; add one, or drop the factor from "
        "imbalance_factors"]


def test_a_checkpoint_pickled_under_numpy_1_loads_and_a_saved_web_page_is_named(tmp_path):
    """A best_acc computed with numpy pickles as numpy's scalar constructor, whose module numpy 1 named
    numpy.core.multiarray (numpy 2: numpy._core.multiarray); both load. A share link's saved HTML page is named so."""
    network = random_resnet32()
    checkpoint = from_resnet32(network.state_dict(), best_acc=np.float64(0.4812))
    torch.save(checkpoint, tmp_path / "numpy2.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "numpy2.pth").read_bytes()
    assert data.count(b"numpy._core.multiarray\nscalar") == 1
    (tmp_path / "numpy1.pth").write_bytes(data.replace(b"numpy._core.multiarray\nscalar",
                                                        b"numpy.core.multiarray\nscalar"))
    for name in ("numpy2.pth", "numpy1.pth"):
        assert released.load_checkpoint(tmp_path / name)["best_acc"] == pytest.approx(0.4812)
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(load_released_resnet32(tmp_path / name, 100)(x), network(x))
    (tmp_path / "page.pth").write_text("<!DOCTYPE html><html><head><title>Google Drive</title></head></html>")
    with pytest.raises(CheckpointError, match=r"page.pth: an HTML page, not a torch checkpoint \(a share link saves"):
        load_released_resnet32(tmp_path / "page.pth", 100)
