"""SPEC §2 (ResNet-32) and SPEC §3 (learning-rate schedule)."""

import pytest
import torch
from torch import nn

from bagmar.method.model import ResNet32
from bagmar.training.train import Recipe, learning_rate


def independent_parameter_count(width=16, num_classes=100, blocks=5):
    """Counted from the architecture's description, not from the module."""
    conv = lambda cin, cout: cin * cout * 9  # noqa: E731  (3x3, no bias)
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias)
    total = conv(3, width) + bn(width)
    in_planes = width
    for planes in (width, 2 * width, 4 * width):
        for _ in range(blocks):
            total += conv(in_planes, planes) + bn(planes) + conv(planes, planes) + bn(planes)
            in_planes = planes
    return total + 4 * width * num_classes + num_classes


def test_parameter_count_matches_the_architecture():
    model = ResNet32(num_classes=100, width=16)
    count = sum(p.numel() for p in model.parameters())
    assert count == independent_parameter_count() == 470_004  # "about 0.47 M" (SPEC §2)


def test_structure_31_convs_option_a_shortcuts_and_a_64_to_100_classifier():
    model = ResNet32()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 31 and all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert [c.stride for c in convs if c.stride != (1, 1)] == [(2, 2), (2, 2)]
    assert {c.out_channels for c in convs} == {16, 32, 64}
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 64
    assert model.classifier.out_features == 100 and model.classifier.bias is not None
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_width_and_class_count_scale_down_for_small_runs():
    model = ResNet32(num_classes=10, width=4)
    assert model(torch.zeros(3, 3, 16, 16)).shape == (3, 10)
    assert sum(p.numel() for p in model.parameters()) == independent_parameter_count(4, 10)


def test_backbone_convs_use_kaiming_normal_init():
    torch.manual_seed(0)
    model = ResNet32()
    conv = model.stages[2][1].conv1  # 64 -> 64, fan_in = 576
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)


def test_learning_rate_schedule():
    recipe = Recipe(epochs=200, warmup_epochs=2, base_lr=0.05, peak_lr=0.1)
    assert learning_rate(1, recipe) == pytest.approx(0.05)
    assert learning_rate(2, recipe) == pytest.approx(0.1)
    assert learning_rate(200, recipe) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(101, recipe) == pytest.approx(0.05)  # half-way through the cosine
    lrs = [learning_rate(e, recipe) for e in range(2, 201)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_longer_warmup_is_linear():
    recipe = Recipe(epochs=10, warmup_epochs=5, base_lr=0.05, peak_lr=0.1)
    assert [round(learning_rate(e, recipe), 6) for e in range(1, 6)] == [0.05, 0.0625, 0.075, 0.0875, 0.1]
