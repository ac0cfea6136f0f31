"""The batched train augmentation against torchvision's per-image tensor implementation (SPEC §3)."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as tv_autoaugment

from bagmar.data import augment

SIZES = [(32, 32), (15, 11)]  # CIFAR, and an odd non-square size
FILL = [augment.FILL] * 3


def _images(b, h, w, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _space(h, w):
    return tv_autoaugment.AutoAugment(tv_autoaugment.AutoAugmentPolicy.CIFAR10)._augmentation_space(10, (h, w))


def _magnitudes(name, h, w):
    """Every magnitude AutoAugment can pass for this op at this size: all 10 bins, both signs where signed."""
    bins, signed = _space(h, w)[name]
    values = [float(v) for v in bins.reshape(-1)]
    return values + [-v for v in values if v] if signed else values


def _reference_op(img, name, magnitude):
    """torchvision's AutoAugment step (F.* on a uint8 tensor, fill 128, nearest)."""
    return tv_autoaugment._apply_op(img, name, magnitude, interpolation=InterpolationMode.NEAREST, fill=FILL)


def _source_matrix(name, magnitude, h, w):
    """The inverse affine matrix torchvision builds for this AutoAugment op, in float64 (Python floats)."""
    if name == "Rotate":  # F.rotate: about the image centre, with -angle
        return TF._get_inverse_affine_matrix([0.0, 0.0], -magnitude, [0.0, 0.0], 1.0, [0.0, 0.0])
    if name == "ShearY":  # F.affine(shear=[0, degrees(atan(m))], center=[0, 0]): the top-left corner
        shear = [0.0, math.degrees(math.atan(magnitude))]
        return TF._get_inverse_affine_matrix([-0.5 * w, -0.5 * h], 0.0, [0.0, 0.0], 1.0, shear)
    translate = [float(int(magnitude)), 0.0] if name == "TranslateX" else [0.0, float(int(magnitude))]
    return TF._get_inverse_affine_matrix([0.0, 0.0], 0.0, translate, 1.0, [0.0, 0.0])


TIE = 1e-4  # a source coordinate this close to a half-pixel is a tie that float32 rounding may send either way


def _nearest_candidates(img, name, magnitude):
    """Per output pixel, the values nearest-neighbour sampling may give: one, or two at a half-pixel tie.

    Exact float64 source coordinates of every output pixel centre (torchvision's grid before float32): the
    nearest sample is unique unless a coordinate sits on a half-pixel (or on the image border's half-pixel,
    where the fill takes over), and only there may two float32 implementations disagree.
    Returns the four images sampled with ties rounded down or up in x and in y; they differ only at ties.
    """
    _, h, w = img.shape
    m = _source_matrix(name, magnitude, h, w)
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64) - h * 0.5 + 0.5,
                          torch.arange(w, dtype=torch.float64) - w * 0.5 + 0.5, indexing="ij")
    ix = m[0] * x + m[1] * y + m[2] + w * 0.5 - 0.5  # source column in pixel units
    iy = m[3] * x + m[4] * y + m[5] + h * 0.5 - 0.5

    def rounded(coord, up):
        tie = ((coord - coord.floor()) - 0.5).abs() < TIE
        return torch.where(tie, coord.floor() + up, coord.round()).long()

    def sample(up_x, up_y):
        cols, rows = rounded(ix, up_x), rounded(iy, up_y)
        inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
        picked = img[:, rows.clamp(0, h - 1), cols.clamp(0, w - 1)]
        return torch.where(inside, picked, torch.tensor(FILL[0], dtype=torch.uint8))

    return [sample(up_x, up_y) for up_x in (0, 1) for up_y in (0, 1)]


def _assert_within_ties(out, img, name, magnitude):
    """out is nearest-neighbour sampling exactly, except at half-pixel ties, where either neighbour is allowed."""
    allowed = torch.zeros(out.shape[-2:], dtype=torch.bool)
    for candidate in _nearest_candidates(img, name, magnitude):
        allowed |= (out == candidate).all(0)  # the whole pixel comes from one source pixel (or the fill)
    assert allowed.all(), f"{name}({magnitude}): {int((~allowed).sum())} pixels differ away from a half-pixel tie"


def _assert_matches(out, img, name, magnitude):
    """Ours against torchvision's op: bit for bit, and for geometric ops both against the exact tie rule."""
    ref = _reference_op(img, name, magnitude)
    if name in augment._GEOMETRIC:
        _assert_within_ties(ref, img, name, magnitude)  # the rule holds for torchvision itself
        _assert_within_ties(out, img, name, magnitude)
    else:
        assert torch.equal(out, ref), f"{name}({magnitude})"


def test_policy_table_is_torchvisions_cifar10_policy():
    policies = tv_autoaugment.AutoAugment(tv_autoaugment.AutoAugmentPolicy.CIFAR10).policies
    assert [tuple(map(tuple, p)) for p in policies] == [tuple(map(tuple, p)) for p in augment._POLICY]


def test_magnitude_bins_mirror_torchvision():
    for h, w in SIZES:
        for name, bins in augment._magnitude_bins(h, w).items():
            assert torch.equal(bins, _space(h, w)[name][0]), name
            assert (name in augment._SIGNED) == _space(h, w)[name][1], name
    used = {name for sub_policy in augment._POLICY for name, _, _ in sub_policy}
    assert used == set(augment._OPS) and len(augment._OPS) == 13


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("name", augment._OPS)
def test_each_op_matches_torchvision(name, h, w):
    images = _images(8, h, w)
    op = torch.full((8,), augment._OPS.index(name))
    for m in _magnitudes(name, h, w):
        out = augment._apply_ops(images, op, torch.full((8,), m, dtype=torch.float64))
        for i in range(len(images)):
            _assert_matches(out[i], images[i], name, m)


@pytest.mark.parametrize("h,w", SIZES)
def test_mixed_ops_per_image(h, w):
    """One batch in which every image has its own op and magnitude (or none)."""
    b = 64
    g = torch.Generator().manual_seed(1)
    images = _images(b, h, w, seed=2)
    op = torch.randint(-1, len(augment._OPS), (b,), generator=g)
    magnitude = torch.empty(b, dtype=torch.float64)
    for i in range(b):
        if op[i] >= 0:
            choices = _magnitudes(augment._OPS[op[i]], h, w)
            magnitude[i] = choices[torch.randint(len(choices), (1,), generator=g)]
        else:
            magnitude[i] = 0.0
    out = augment._apply_ops(images, op, magnitude)
    for i in range(b):
        if op[i] >= 0:
            _assert_matches(out[i], images[i], augment._OPS[op[i]], float(magnitude[i]))
        else:
            assert torch.equal(out[i], images[i])


def test_uniform_images_stay_finite():
    """Constant channels hit torchvision's special cases (autocontrast's infinite scale, equalize's step 0)."""
    images = torch.stack([torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (0, 7, 255)])
    for name in ("AutoContrast", "Equalize", "Contrast"):
        op = torch.full((3,), augment._OPS.index(name))
        out = augment._apply_ops(images, op, torch.full((3,), 0.5, dtype=torch.float64))
        assert torch.equal(out, _reference_op(images, name, 0.5)), name


def test_crop_and_flip_by_hand():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5) + 1  # no zeros
    top, left = torch.tensor([0, 3]), torch.tensor([2, 4])
    out = augment._crop_flip(images, top, left, torch.tensor([False, True]), padding=2)
    # image 0: offset (0, 2) in the padded image = shifted down by 2 rows, columns unshifted
    expected0 = torch.zeros(3, 4, 5, dtype=torch.uint8)
    expected0[:, 2:, :] = images[0, :, :2, :]
    assert torch.equal(out[0], expected0)
    # image 1: offset (3, 4) = rows 1.. and columns 2.. of the original, zero beyond; then mirrored
    expected1 = torch.zeros(3, 4, 5, dtype=torch.uint8)
    expected1[:, :3, :3] = images[1, :, 1:, 2:]
    assert torch.equal(out[1], expected1.flip(-1))


def test_cutout_by_hand():
    x = torch.ones(4, 3, 32, 32)
    cut_y, cut_x = torch.tensor([0, 31, 10, 5]), torch.tensor([0, 31, 20, 5])
    out = augment._cutout(x, cut_y, cut_x, 16)
    holes = [(slice(0, 8), slice(0, 8)), (slice(23, 32), slice(23, 32)), (slice(2, 18), slice(12, 28)),
             (slice(0, 13), slice(0, 13))]
    for i, (rows, cols) in enumerate(holes):
        expected = torch.ones(3, 32, 32)
        expected[:, rows, cols] = 0
        assert torch.equal(out[i], expected), i
    odd = augment._cutout(torch.ones(1, 1, 9, 9), torch.tensor([4]), torch.tensor([4]), 5)
    assert odd[0, 0].eq(0).sum() == 25 and odd[0, 0, 2:7, 2:7].eq(0).all()


def test_pipeline_matches_per_image_torchvision():
    """train_augment = torchvision's transforms run image by image with the same draws."""
    b, h, w, padding, size = 48, 32, 32, 4, 16
    images = _images(b, h, w, seed=3)
    out = augment.train_augment(images, torch.Generator().manual_seed(5), padding=padding, cutout_size=size)
    draw = augment._draw(b, h, w, padding, torch.Generator().manual_seed(5))
    table = augment._policy_tables(h, w, torch.device("cpu"))
    mean, std = list(augment.CIFAR_MEAN), list(augment.CIFAR_STD)
    space = _space(h, w)
    for i in range(b):
        img = TF.crop(TF.pad(images[i], [padding]), int(draw.top[i]), int(draw.left[i]), h, w)
        if draw.flip[i]:
            img = TF.hflip(img)
        for slot, (name, p, bin_) in enumerate(augment._POLICY[int(draw.policy[i])]):
            assert augment._OPS.index(name) == table[0][draw.policy[i], slot]
            if draw.prob[i, slot] <= p:
                bins, signed = space[name]
                m = float(bins[bin_]) if bin_ is not None else 0.0
                m = -m if signed and draw.sign[i, slot] == 0 else m
                if name in augment._GEOMETRIC:  # ours (pinned to torchvision's up to ties above), so ties agree
                    ours = augment._apply_ops(img[None], torch.tensor([augment._OPS.index(name)]),
                                              torch.tensor([m], dtype=torch.float64))[0]
                    _assert_matches(ours, img, name, m)
                    img = ours
                else:
                    img = _reference_op(img, name, m)
        img = TF.convert_image_dtype(img, torch.float32)
        y0, x0 = int(draw.cut_y[i]) - size // 2, int(draw.cut_x[i]) - size // 2
        img[:, max(y0, 0) : y0 + size, max(x0, 0) : x0 + size] = 0
        ref = TF.normalize(img, mean, std)
        assert torch.equal(out[i], ref), i


def test_policy_and_op_frequencies():
    n = 200_000
    draw = augment._draw(n, 32, 32, 4, torch.Generator().manual_seed(7))
    op, magnitude = augment._policy_ops(draw.policy, draw.prob, draw.sign, 32, 32)
    counts = torch.bincount(draw.policy, minlength=25).double()
    assert (counts - n / 25).abs().max() < 4 * math.sqrt(n * (1 / 25) * (24 / 25))
    for k, sub_policy in enumerate(augment._POLICY):
        chosen = draw.policy == k
        for slot, (name, p, bin_) in enumerate(sub_policy):
            applied = op[chosen, slot] >= 0
            assert (op[chosen, slot][applied] == augment._OPS.index(name)).all()
            rate, m = applied.double().mean().item(), chosen.sum().item()
            assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / m) + 1 / m, (k, slot, rate, p)
            if name in augment._SIGNED and bin_ != 0:
                negative = (magnitude[chosen, slot] < 0).double().mean().item()
                assert abs(negative - 0.5) <= 4 * math.sqrt(0.25 / m), (k, slot)
    assert abs(draw.flip.double().mean().item() - 0.5) <= 4 * math.sqrt(0.25 / n)
    for offsets in (draw.top, draw.left):
        assert (torch.bincount(offsets, minlength=9).double() - n / 9).abs().max() < 4 * math.sqrt(n * 8 / 81)


def test_determinism_and_output():
    images = _images(16, 32, 32)
    out = augment.train_augment(images, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert torch.equal(out, augment.train_augment(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment.train_augment(images, torch.Generator().manual_seed(1)))
    mean, std = torch.tensor(augment.CIFAR_MEAN).view(3, 1, 1), torch.tensor(augment.CIFAR_STD).view(3, 1, 1)
    unit = out * std + mean
    assert unit.min() > -1e-5 and unit.max() < 1 + 1e-5
    assert (unit.abs() < 1e-5).flatten(1).sum(1).min() >= 3 * 8 * 8  # a Cutout hole covers at least a corner
    small = augment.train_augment(_images(4, 8, 8), torch.Generator().manual_seed(0), padding=2, cutout_size=4)
    assert small.shape == (4, 3, 8, 8) and torch.isfinite(small).all()


def test_test_transform_is_scale_and_normalise():
    images = _images(4, 32, 32)
    ref = TF.normalize(TF.convert_image_dtype(images, torch.float32), augment.CIFAR_MEAN, augment.CIFAR_STD)
    assert torch.equal(augment.test_transform(images), ref)


@pytest.mark.parametrize("policy", augment.POLICIES)
def test_no_host_read_of_device_values(policy, monkeypatch):
    """What a CUDA graph needs, checked on the CPU for both policies: under FakeTensorMode tensors hold no values,
    so any host read (.item(), a boolean mask, a data-dependent shape) raises."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

    images, g = _images(16, 32, 32), torch.Generator().manual_seed(0)
    augment.train_augment(images, g, policy=policy)  # the first call fills the per-device caches
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = augment.train_augment(images, g, policy=policy)
    assert out.shape == images.shape and out.dtype == torch.float32
    real = augment._cutout

    def syncing(x, *args):  # the check itself: a host read anywhere in the pipeline is caught
        float(x.sum())
        return real(x, *args)

    monkeypatch.setattr(augment, "_cutout", syncing)
    with pytest.raises(DataDependentOutputException), FakeTensorMode(allow_non_fake_inputs=True):
        augment.train_augment(images, g, policy=policy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("policy", augment.POLICIES)
def test_cuda_matches_cpu_without_host_sync(policy):
    images = _images(64, 32, 32)
    if policy == "torchvision":  # the released policy's ops are compared on the GPU in test_released_autoaugment.py
        cpu_draw = augment._draw(64, 32, 32, 4, torch.Generator().manual_seed(0))
        op, magnitude = augment._policy_ops(cpu_draw.policy, cpu_draw.prob, cpu_draw.sign, 32, 32)
        for slot in range(2):
            gpu = augment._apply_ops(images.cuda(), op[:, slot].cuda(), magnitude[:, slot].cuda()).cpu()
            for i in range(len(images)):
                if op[i, slot] >= 0:
                    _assert_matches(gpu[i], images[i], augment._OPS[op[i, slot]], float(magnitude[i, slot]))
                else:
                    assert torch.equal(gpu[i], images[i])
    images, g = images.cuda(), torch.Generator(device="cuda").manual_seed(0)
    augment.train_augment(images, g, policy=policy)  # the first call fills the per-device caches from the host
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment.train_augment(images, g, policy=policy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.is_cuda and torch.isfinite(out).all()
