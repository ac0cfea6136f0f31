"""The large benchmarks' networks (bagmar.method.backbones): torchvision's ResNets, stage-1 weights, stage 2.

No weights are downloaded: torchvision builds each network with random weights, and the state dicts here are
written by the tests.
"""

import pytest
import torch
from torchvision import models

from bagmar.method.backbones import WeightsError, build, freeze, load_stage1


def test_resnet10_is_basic_blocks_one_per_stage_with_a_biased_classifier():
    network = build("resnet10", 1000)
    assert [len(getattr(network, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert isinstance(network.layer1[0], models.resnet.BasicBlock)
    assert (network.fc.in_features, network.fc.out_features) == (512, 1000) and network.fc.bias is not None
    assert network(torch.zeros(2, 3, 64, 64)).shape == (2, 1000)


def test_a_torchvision_resnet50_state_dict_loads_with_no_missing_or_unexpected_key(tmp_path):
    reference = models.resnet50()  # torchvision's layout, random weights (nothing downloaded)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    network = build("resnet50", 1000)
    load_stage1(network, tmp_path / "resnet50.pth")
    for key, value in reference.state_dict().items():
        assert torch.equal(network.state_dict()[key], value), key
    # wrapped as trainers save it: under "state_dict", with DataParallel's "module." prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 90},
               tmp_path / "wrapped.pth")
    other = build("resnet50", 1000)
    load_stage1(other, tmp_path / "wrapped.pth")
    assert torch.equal(other.fc.weight, reference.fc.weight)


def test_a_stage1_checkpoint_round_trips_and_another_class_count_keeps_its_own_classifier(tmp_path):
    network = build("resnet10", 365)
    torch.save(network.state_dict(), tmp_path / "stage1.pt")
    again = build("resnet10", 365)
    load_stage1(again, tmp_path / "stage1.pt")
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), again.state_dict().values()))
    smaller = build("resnet10", 10)
    fc = smaller.fc.weight.clone()
    load_stage1(smaller, tmp_path / "stage1.pt", classifier=False)
    assert torch.equal(smaller.fc.weight, fc) and torch.equal(smaller.conv1.weight, network.conv1.weight)


def test_a_mismatched_file_names_its_keys(tmp_path):
    torch.save(build("resnet10", 10).state_dict(), tmp_path / "r10.pt")
    with pytest.raises(WeightsError, match=r"r10.pt does not fit resnet50: missing: layer1.0.conv3.weight, .* \(246\); "
                                          r"other shape: layer1.0.conv1.weight \(64, 64, 3, 3\) \(the network: \(64, 64, 1, 1\)\)"):
        load_stage1(build("resnet50", 10), tmp_path / "r10.pt")
    torch.save(build("resnet50", 10).state_dict(), tmp_path / "r50.pt")
    with pytest.raises(WeightsError, match=r"r50.pt does not fit resnet10: unexpected: layer1.0.conv3.weight, "):
        load_stage1(build("resnet10", 10), tmp_path / "r50.pt")
    with pytest.raises(WeightsError, match=r"other shape: fc.weight \(10, 512\) \(the network: \(20, 512\)\)"):
        load_stage1(build("resnet10", 20), tmp_path / "r10.pt")
    torch.save({"note": "not weights"}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_stage1(build("resnet10", 10), tmp_path / "bad.pt")


def test_stage2_trains_the_classifier_only_and_leaves_the_backbone_bit_identical():
    torch.manual_seed(0)
    network = build("resnet10", 5)
    network.train()
    trainable = freeze(network, "classifier_retraining", "frozen")
    assert trainable == [network.fc.weight, network.fc.bias]
    before = {k: v.clone() for k, v in network.state_dict().items()}
    optimizer = torch.optim.SGD(trainable, lr=0.2, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(network(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = network.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm's running statistics too stay as loaded


def test_a_file_in_torchs_hub_cache_must_match_the_checksum_in_its_name(tmp_path, monkeypatch):
    """torchvision's published weights are named <name>-<sha256 prefix>.pth in torch's hub cache; a file there
    whose content does not match (truncated, replaced) is refused, as torch.hub refuses it on download."""
    import hashlib

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(build("resnet10", 10, width=8).state_dict(), checkpoints / "weights.tmp")
    digest = hashlib.sha256((checkpoints / "weights.tmp").read_bytes()).hexdigest()
    (checkpoints / "weights.tmp").rename(checkpoints / f"resnet10-{digest[:8]}.pth")
    load_stage1(build("resnet10", 10, width=8), checkpoints / f"resnet10-{digest[:8]}.pth")
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    (checkpoints / f"resnet10-{digest[:8]}.pth").rename(checkpoints / f"resnet10-{wrong}.pth")
    with pytest.raises(WeightsError, match=f"resnet10-{wrong}.pth: its sha256 does not start with {wrong}"):
        load_stage1(build("resnet10", 10, width=8), checkpoints / f"resnet10-{wrong}.pth")


def test_torchvision_weights_as_stage1_from_a_temporary_torch_cache(tmp_path, monkeypatch):
    """``stage1: "torchvision:<Weights>"`` through torchvision's weights API: a weights file that this test writes
    into a temporary torch cache, under the name torchvision's API gives it (its URL's file name, whose part after
    the dash is the file's sha256 prefix), starts a last-block fine-tuning; a missing file is one line naming it
    and its URL before any job; a file whose content does not match that checksum is refused when read."""
    import hashlib

    import torchvision
    from torchvision.models._api import Weights, WeightsEnum

    from bagmar.config.recipe import ImageListRecipe, torchvision_weights
    from bagmar.config.run import problems
    from bagmar.training.image_train import build_network
    from test_config import committed

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(5)
    imagenet = build("resnet18", 1000, width=16)  # stands in for ImageNet weights: torchvision's layout, 1,000 classes
    torch.save(imagenet.state_dict(), tmp_path / "weights.pth")
    digest = hashlib.sha256((tmp_path / "weights.pth").read_bytes()).hexdigest()
    url = f"https://download.example.org/models/resnet18-{digest[:8]}.pth"
    enum = WeightsEnum("StandIn_Weights", [("IMAGENET1K_V1", Weights(url=url, transforms=None, meta={}))])
    monkeypatch.setattr(torchvision.models, "StandIn_Weights", enum, raising=False)  # where get_weight looks
    stage1 = "torchvision:StandIn_Weights.IMAGENET1K_V1"
    expected = checkpoints / f"resnet18-{digest[:8]}.pth"
    assert torchvision_weights(stage1) == (expected, url)

    config = committed("miniature_places")
    config["trainings"]["ce"]["stage1"] = stage1
    (tmp_path / "weights.pth").rename(expected)
    assert problems(config) == []
    finetuning = ImageListRecipe(architecture="resnet18", width=16, epochs=2, batch_size=8, lr=0.1, weight_decay=0.0,
                                 protocol="last_block_finetuning", stage1=str(expected))
    network, _ = build_network(finetuning, 30)
    loaded = network.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in imagenet.state_dict().items()
               if not key.startswith("fc."))  # every layer as the file has it; a new 30-way fc
    # the download command the missing-file line names finds the same file through the weights API
    fetched = torchvision.models.get_weight("StandIn_Weights.IMAGENET1K_V1").get_state_dict(check_hash=True)
    assert all(torch.equal(fetched[key], value) for key, value in imagenet.state_dict().items())

    expected.unlink()  # missing: one line, with the file and where to download it
    (line,) = problems(config)
    assert line == (f"trainings.ce.stage1 = '{stage1}': {expected} is not there; download {url} to it (online: "
                    "python -c \"import torchvision; torchvision.models.get_weight('StandIn_Weights.IMAGENET1K_V1')"
                    ".get_state_dict(check_hash=True)\", torchvision's weights API, puts it there and checks its "
                    "checksum)")

    torch.manual_seed(6)  # the wrong content under the right name: refused when read, naming the file
    torch.save(build("resnet18", 1000, width=16).state_dict(), expected)
    assert problems(config) == []  # planning checks that it is there; reading it checks what it is
    with pytest.raises(WeightsError, match=f"{expected}: its sha256 does not start with {digest[:8]}"):
        build_network(finetuning, 30)
