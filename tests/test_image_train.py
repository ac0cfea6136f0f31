"""Training on an image-list data set (bagmar.training.image_train, bagmar.data.image_data) on a generated miniature.

Stage 2 leaves the feature model bit-identical; a stage-1 model round-trips through its saved file; a training
stopped after a checkpoint resumes to the uninterrupted weights bit for bit (with another number of decoding
workers); a truncated JPEG stops training with its list, line and path.
"""

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bagmar.method import backbones
from bagmar.data.image_data import epoch_order, read_image, TrainImages
from bagmar.data.image_lists import read_list, write_miniature
from bagmar.training.image_train import build_network, train_image_list
from bagmar.io import DataError
from bagmar.config.recipe import ImageListRecipe, RecipeError

CLASSES = 10


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    root = tmp_path_factory.mktemp("miniature")
    write_miniature(root, classes=CLASSES, imbalance_factor=10, max_per_class=40, val_per_class=2,
                    test_per_class=6, image_size=32)
    return root, read_list(root / "Mini_LT_train.txt", CLASSES), read_list(root / "Mini_LT_test.txt", CLASSES)


def recipe(**changes) -> ImageListRecipe:
    settings = dict(architecture="resnet10", epochs=3, batch_size=32, lr=0.1, weight_decay=5e-4, width=8,
                    image_size=24, resize_size=28, lambda1=1.0, lambda2=1.0, seed=3)
    return ImageListRecipe(**{**settings, **changes})


def quiet(line):
    pass


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("augment", ["released_lt", "kang"])
def test_a_stopped_training_resumes_to_the_uninterrupted_weights_bit_for_bit(miniature, tmp_path, augment):
    root, train, test = miniature
    whole = train_image_list(root, train, test, CLASSES, recipe(augment=augment), progress=quiet)
    first = train_image_list(root, train, test, CLASSES, recipe(augment=augment), progress=quiet,
                             checkpoint_dir=tmp_path, stop_after_epoch=1)
    assert len(first.metrics) == 1
    lines = []
    resumed = train_image_list(root, train, test, CLASSES, recipe(augment=augment), progress=lines.append,
                               checkpoint_dir=tmp_path, workers=2)  # decoded in two worker processes: the same draws
    assert any("resuming training after epoch 1" in line for line in lines)
    assert states_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert states_equal(whole.stats.state_dict(), resumed.stats.state_dict())
    assert np.array_equal(whole.test_logits, resumed.test_logits)
    assert [row["train_loss"] for row in whole.metrics] == [row["train_loss"] for row in resumed.metrics]
    other_seed = train_image_list(root, train, test, CLASSES, recipe(augment=augment, seed=4), progress=quiet,
                                  stop_after_epoch=1)
    assert not torch.equal(other_seed.model.fc.weight, first.model.fc.weight)  # the comparison can fail


@pytest.mark.processes
def test_sigkill_mid_epoch_then_rerun_is_bit_identical(miniature, tmp_path):
    """As for CIFAR (tests/test_resume.py, whose worker runs this training too): killed in epoch 2's third step,
    the rerun resumes after epoch 1 and ends with the uninterrupted weights, statistics, logits and metrics."""
    root = miniature[0]
    worker = Path(__file__).with_name("resume_worker.py")

    def run(name, *point):
        out = tmp_path / f"{name}.pt"
        done = subprocess.run([sys.executable, str(worker), "--image-list", str(root), str(tmp_path / name), str(out),
                               *point], capture_output=True, text=True, timeout=300)
        return done, out

    whole, whole_out = run("whole")
    assert whole.returncode == 0, whole.stderr
    killed, killed_out = run("killed", "step:2:3")
    assert killed.returncode == -9 and not killed_out.exists()
    resumed, resumed_out = run("killed")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming worker after epoch 1 " in resumed.stdout
    expected, result = torch.load(whole_out, weights_only=True), torch.load(resumed_out, weights_only=True)
    assert states_equal(expected["model"], result["model"])
    assert torch.equal(expected["logits"], result["logits"]) and torch.equal(expected["theta"], result["theta"])
    assert expected["metrics"] == result["metrics"]


def test_stage2_trains_the_classifier_only_on_a_stage1_model_that_round_trips(miniature, tmp_path):
    root, train, test = miniature
    stage1 = train_image_list(root, train, test, CLASSES, recipe(epochs=1), progress=quiet)
    files = {kind: tmp_path / name for kind, name in
             {"model": "model.pt", "logits": "l.npz", "metrics": "m.csv", "statistics": "s.npz"}.items()}
    stage1.save(**files, test_labels=test.labels)
    loaded = backbones.build("resnet10", CLASSES, width=8)
    backbones.load_stage1(loaded, files["model"])  # the saved stage-1 model round-trips, classifier included
    assert states_equal(loaded.state_dict(), stage1.model.state_dict())

    second = recipe(epochs=2, protocol="classifier_retraining", stage1=str(files["model"]), sampler="class_aware",
                    loss="logit_adjusted", lambda1=0.0, lambda2=0.0)
    network, trainable = build_network(second, CLASSES)
    assert {id(p) for p in trainable} == {id(network.fc.weight), id(network.fc.bias)}
    before = stage1.model.state_dict()
    backbone = [key for key in before if not key.startswith("fc.")]
    statistics = [key for key in backbone if key.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics
    # as released (run_networks.py, train(): model.train() on every network each epoch, the frozen feature model
    # included): the feature weights stay, the BatchNorm running statistics move with the stage-2 batches
    released = train_image_list(root, train, test, CLASSES, second, progress=quiet).model.state_dict()
    assert all(torch.equal(released[key], before[key]) for key in backbone if key not in statistics)
    assert all(not torch.equal(released[key], before[key]) for key in statistics)
    assert not torch.equal(released["fc.weight"], before["fc.weight"])
    # frozen_batchnorm: frozen keeps the whole feature model, its statistics included, bit for bit
    frozen = train_image_list(root, train, test, CLASSES, dataclasses.replace(second, frozen_batchnorm="frozen"),
                              progress=quiet).model.state_dict()
    assert all(torch.equal(frozen[key], before[key]) for key in backbone)
    assert not torch.equal(frozen["fc.weight"], before["fc.weight"])


def test_the_protocols_from_weights_need_them_and_end_to_end_takes_none():
    for protocol in ("classifier_retraining", "last_block_finetuning"):
        with pytest.raises(RecipeError, match=f"protocol {protocol} needs the weights it starts from"):
            recipe(protocol=protocol)
    with pytest.raises(RecipeError, match="only classifier_retraining and last_block_finetuning take them"):
        recipe(stage1="model.pt")


def test_a_truncated_jpeg_stops_training_with_its_list_line_and_path(miniature, tmp_path):
    root, train, test = miniature
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    victim = copy / train.images[7]
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"Mini_LT_train.txt:8: {victim} cannot be decoded \(300 bytes; .*truncated"):
        train_image_list(copy, train, test, CLASSES, recipe(epochs=1, batch_size=len(train.labels)), progress=quiet)
    victim.unlink()
    with pytest.raises(DataError, match=rf"Mini_LT_train.txt:8: cannot read {victim}"):
        read_image(copy, train, 7)


def test_augmentation_draws_follow_the_seed_epoch_and_position_only(miniature):
    root, train, _ = miniature
    images = TrainImages(root, train, seed=0, image_size=24, color_jitter=0.4, augment="kang")
    a, label, jitter = images[(5, 2, 17)]
    b, _, again = images[(5, 2, 17)]
    c, _, _ = images[(5, 3, 17)]
    assert a.shape == (3, 24, 24) and a.dtype == torch.uint8 and label == train.labels[5]
    assert torch.equal(a, b) and torch.equal(jitter, again) and not torch.equal(a, c)
    assert bool(((jitter >= 0.6) & (jitter <= 1.4)).all())


def test_the_class_aware_order_visits_classes_in_shuffled_cycles_of_four_images():
    labels = np.repeat(np.arange(5), [50, 20, 8, 3, 3])
    order = epoch_order(labels, 5, seed=0, epoch=1, sampler="class_aware", samples_per_class=4)
    assert len(order) == len(labels)
    visits = labels[order].reshape(-1, 4)
    assert (visits == visits[:, :1]).all()  # each visit: four images of one class
    first_cycle = visits[:5, 0]
    assert sorted(first_cycle.tolist()) == [0, 1, 2, 3, 4]  # every class once per cycle, whatever its size
    assert np.array_equal(order, epoch_order(labels, 5, seed=0, epoch=1, sampler="class_aware", samples_per_class=4))
    assert not np.array_equal(order, epoch_order(labels, 5, seed=0, epoch=2, sampler="class_aware",
                                                 samples_per_class=4))
    instance = epoch_order(labels, 5, seed=0, epoch=1, sampler="instance", samples_per_class=4)
    assert sorted(instance.tolist()) == list(range(len(labels)))


def test_stage2_starts_from_a_stage1_checkpoint_in_the_released_layout(miniature, tmp_path):
    """The paper's released save_model layout (state_dict_best: feat_model and classifier, DataParallel's module.
    prefixes): the feature model loads, and stage 2 trains on it exactly as on the same weights as a state dict."""
    root, train, test = miniature
    stage1 = train_image_list(root, train, test, CLASSES, recipe(epochs=1), progress=quiet).model.state_dict()
    feat = {f"module.{k}": v for k, v in stage1.items() if not k.startswith("fc.")}
    classifier = {f"module.{k}": v for k, v in stage1.items() if k.startswith("fc.")}
    torch.save({"epoch": 1, "best_epoch": 1, "state_dict_best": {"feat_model": feat, "classifier": classifier},
                "best_acc": 0.25, "centroids": None}, tmp_path / "final_model_checkpoint.pth")
    torch.save(stage1, tmp_path / "model.pt")
    trained = {}
    for name in ("final_model_checkpoint.pth", "model.pt"):
        second = recipe(epochs=2, protocol="classifier_retraining", stage1=str(tmp_path / name), sampler="class_aware")
        trained[name] = train_image_list(root, train, test, CLASSES, second, progress=quiet).model.state_dict()
    assert states_equal(trained["final_model_checkpoint.pth"], trained["model.pt"])
    assert all(torch.equal(trained["model.pt"][k], stage1[k]) for k in stage1 if k.endswith(".weight")
               and not k.startswith("fc.") and "bn" not in k)


def _changed(before: dict, after: dict) -> set[str]:
    return {key for key in before if not torch.equal(before[key], after[key])}


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_last_block_finetuning_changes_the_last_block_and_fc_only(miniature, tmp_path, batchnorm):
    """Places-LT's stage 1 as the literature trains it: pretrained weights (here a stand-in file in torchvision's
    layout, ImageNet's 1,000-way fc included), everything frozen but the last residual block and a new fc. Every
    other parameter is compared before and after; with frozen_batchnorm: frozen the frozen layers' BatchNorm
    statistics stay too, with train (as released) they move and their weights do not."""
    root, train, test = miniature
    torch.manual_seed(11)
    pretrained = backbones.build("resnet18", 1000, width=8)
    torch.save(pretrained.state_dict(), tmp_path / "pretrained.pth")
    finetuning = recipe(architecture="resnet18", epochs=2, protocol="last_block_finetuning",
                        stage1=str(tmp_path / "pretrained.pth"), frozen_batchnorm=batchnorm)
    network, trainable = build_network(finetuning, CLASSES)
    names = {name for name, parameter in network.named_parameters() if any(parameter is t for t in trainable)}
    assert names == {name for name, _ in network.named_parameters() if name.startswith(("layer4.1.", "fc."))}
    before = {key: value for key, value in pretrained.state_dict().items() if not key.startswith("fc.")}
    after = train_image_list(root, train, test, CLASSES, finetuning, progress=quiet).model.state_dict()
    parameters = {name for name, _ in network.named_parameters()}
    last_block = {key for key in before if key.startswith("layer4.1.")}
    statistics = {key for key in before if key.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    changed = _changed(before, after)
    assert {key for key in changed if key in parameters} == {key for key in last_block if key in parameters}
    frozen_statistics = statistics - last_block
    assert changed - last_block == (set() if batchnorm == "frozen" else frozen_statistics)
    assert after["fc.weight"].shape == (CLASSES, pretrained.fc.in_features)  # a new classifier for these classes
    assert "layer4.0.conv1.weight" not in changed  # layer4's first block is not the last block


def test_last_block_finetuning_from_random_weights_keeps_the_seeds_initialisation(miniature):
    """stage1: random, the miniature demos' stand-in for pretrained weights: the frozen layers are the network's
    initialisation from the seed, which anyone can rebuild from the seed alone."""
    root, train, test = miniature
    finetuning = recipe(architecture="resnet18", epochs=2, protocol="last_block_finetuning", stage1="random",
                        frozen_batchnorm="frozen")
    torch.manual_seed(finetuning.seed)
    initial = backbones.build("resnet18", CLASSES, width=8).state_dict()
    after = train_image_list(root, train, test, CLASSES, finetuning, progress=quiet).model.state_dict()
    assert {key.split(".")[0] + "." + key.split(".")[1] for key in _changed(initial, after)
            if not key.startswith("fc.")} == {"layer4.1"}
    assert not torch.equal(initial["fc.weight"], after["fc.weight"])


def test_validation_logits_are_the_final_models_once_at_the_end(miniature, tmp_path):
    """A data set with a validation split: the final model's logits on it, computed once after the last epoch
    (the loop's per-epoch test pass is untouched), as the test images are; saved beside the test outputs."""
    root, train, test = miniature
    val = read_list(root / "Mini_LT_val.txt", CLASSES)
    lines = []
    result = train_image_list(root, train, test, CLASSES, recipe(epochs=2), progress=lines.append, val_list=val)
    assert result.val_logits.shape == (len(val.labels), CLASSES)
    assert sum("validation logits of the final model" in line for line in lines) == 1
    # the validation pass is the test pass on other images: given the test list, it gives the final test logits
    again = train_image_list(root, train, test, CLASSES, recipe(epochs=2), progress=quiet, val_list=test)
    assert np.array_equal(again.val_logits, again.test_logits)
    files = {kind: tmp_path / name for kind, name in
             {"model": "model.pt", "logits": "l.npz", "metrics": "m.csv", "statistics": "s.npz"}.items()}
    result.save(**files, test_labels=test.labels, val_logits=tmp_path / "val.npz", val_labels=val.labels)
    saved = np.load(tmp_path / "val.npz")
    assert np.array_equal(saved["logits"], result.val_logits) and np.array_equal(saved["labels"], val.labels)
    assert set(saved.files) == {"logits", "labels", "final_epoch", "classifier_bias", "classifier_weight_norm"}
