"""train_augment(policy="released") against the released code's PIL CIFAR10Policy, run by Pillow itself.

The reference below is the released policy's own code; its random draws are scripted so that each PIL run makes
the same choices as the batched one. Every op, at every magnitude bin and sign, and every whole sub-policy must
come out bit for bit: the batched code follows Pillow's C arithmetic (libImaging: Blend.c, Convert.c, Filter.c,
Geometry.c), the bicubic shear included (SHEAR_TOLERANCE).
"""

import math
import platform
import random as _random_module

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from bagmar.data import augment

SIZES = [(32, 32), (16, 16), (15, 11)]  # CIFAR, the demo's size, and an odd non-square one (H, W)

# The bicubic ShearY is float64 arithmetic in Pillow and here, in the same order, so it matches bit for bit
# (measured: max abs difference 0 on every image, bin and sign, 32x32, 16x16, 15x11). A Pillow built to contract
# a * b + c into fused multiply-adds (as compilers may on aarch64) can move a value across a truncation boundary,
# so elsewhere the test allows max abs difference 1 on at most 1% of the values.
SHEAR_TOLERANCE = (0, 0.0) if platform.machine() in ("x86_64", "AMD64") else (1, 0.01)  # (max abs, fraction)

# --------------------------------------------------------------------------------------------------------------
# The released policy: DeepVoltaire/AutoAugment, autoaugment.py (commit 17d718251f25c0d9413bf30f91b523907924f33a),
# class CIFAR10Policy and class SubPolicy, copied as they are except: np.int (gone from numpy) is int; SubPolicy
# also keeps its op names and bins (`self.names`, `self.bins`) for the table test; the draws go through the
# module-level name `random`, which the tests replace by scripted draws (`scripted`).

random = _random_module


class CIFAR10Policy(object):
    """ Randomly choose one of the best 25 Sub-policies on CIFAR10.

        Example:
        >>> policy = CIFAR10Policy()
        >>> transformed = policy(image)

        Example as a PyTorch Transform:
        >>> transform=transforms.Compose([
        >>>     transforms.Resize(256),
        >>>     CIFAR10Policy(),
        >>>     transforms.ToTensor()])
    """
    def __init__(self, fillcolor=(128, 128, 128)):
        self.policies = [
            SubPolicy(0.1, "invert", 7, 0.2, "contrast", 6, fillcolor),
            SubPolicy(0.7, "rotate", 2, 0.3, "translateX", 9, fillcolor),
            SubPolicy(0.8, "sharpness", 1, 0.9, "sharpness", 3, fillcolor),
            SubPolicy(0.5, "shearY", 8, 0.7, "translateY", 9, fillcolor),
            SubPolicy(0.5, "autocontrast", 8, 0.9, "equalize", 2, fillcolor),

            SubPolicy(0.2, "shearY", 7, 0.3, "posterize", 7, fillcolor),
            SubPolicy(0.4, "color", 3, 0.6, "brightness", 7, fillcolor),
            SubPolicy(0.3, "sharpness", 9, 0.7, "brightness", 9, fillcolor),
            SubPolicy(0.6, "equalize", 5, 0.5, "equalize", 1, fillcolor),
            SubPolicy(0.6, "contrast", 7, 0.6, "sharpness", 5, fillcolor),

            SubPolicy(0.7, "color", 7, 0.5, "translateX", 8, fillcolor),
            SubPolicy(0.3, "equalize", 7, 0.4, "autocontrast", 8, fillcolor),
            SubPolicy(0.4, "translateY", 3, 0.2, "sharpness", 6, fillcolor),
            SubPolicy(0.9, "brightness", 6, 0.2, "color", 8, fillcolor),
            SubPolicy(0.5, "solarize", 2, 0.0, "invert", 3, fillcolor),

            SubPolicy(0.2, "equalize", 0, 0.6, "autocontrast", 0, fillcolor),
            SubPolicy(0.2, "equalize", 8, 0.6, "equalize", 4, fillcolor),
            SubPolicy(0.9, "color", 9, 0.6, "equalize", 6, fillcolor),
            SubPolicy(0.8, "autocontrast", 4, 0.2, "solarize", 8, fillcolor),
            SubPolicy(0.1, "brightness", 3, 0.7, "color", 0, fillcolor),

            SubPolicy(0.4, "solarize", 5, 0.9, "autocontrast", 3, fillcolor),
            SubPolicy(0.9, "translateY", 9, 0.7, "translateY", 9, fillcolor),
            SubPolicy(0.9, "autocontrast", 2, 0.8, "solarize", 3, fillcolor),
            SubPolicy(0.8, "equalize", 8, 0.1, "invert", 3, fillcolor),
            SubPolicy(0.7, "translateY", 9, 0.9, "autocontrast", 1, fillcolor)
        ]


    def __call__(self, img):
        policy_idx = random.randint(0, len(self.policies) - 1)
        return self.policies[policy_idx](img)

    def __repr__(self):
        return "AutoAugment CIFAR10 Policy"


class SubPolicy(object):
    def __init__(self, p1, operation1, magnitude_idx1, p2, operation2, magnitude_idx2, fillcolor=(128, 128, 128)):
        ranges = {
            "shearX": np.linspace(0, 0.3, 10),
            "shearY": np.linspace(0, 0.3, 10),
            "translateX": np.linspace(0, 150 / 331, 10),
            "translateY": np.linspace(0, 150 / 331, 10),
            "rotate": np.linspace(0, 30, 10),
            "color": np.linspace(0.0, 0.9, 10),
            "posterize": np.round(np.linspace(8, 4, 10), 0).astype(int),
            "solarize": np.linspace(256, 0, 10),
            "contrast": np.linspace(0.0, 0.9, 10),
            "sharpness": np.linspace(0.0, 0.9, 10),
            "brightness": np.linspace(0.0, 0.9, 10),
            "autocontrast": [0] * 10,
            "equalize": [0] * 10,
            "invert": [0] * 10
        }

        # from https://stackoverflow.com/questions/5252170/specify-image-filling-color-when-rotating-in-python-with-pil-and-setting-expand
        def rotate_with_fill(img, magnitude):
            rot = img.convert("RGBA").rotate(magnitude)
            return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)

        func = {
            "shearX": lambda img, magnitude: img.transform(
                img.size, Image.AFFINE, (1, magnitude * random.choice([-1, 1]), 0, 0, 1, 0),
                Image.BICUBIC, fillcolor=fillcolor),
            "shearY": lambda img, magnitude: img.transform(
                img.size, Image.AFFINE, (1, 0, 0, magnitude * random.choice([-1, 1]), 1, 0),
                Image.BICUBIC, fillcolor=fillcolor),
            "translateX": lambda img, magnitude: img.transform(
                img.size, Image.AFFINE, (1, 0, magnitude * img.size[0] * random.choice([-1, 1]), 0, 1, 0),
                fillcolor=fillcolor),
            "translateY": lambda img, magnitude: img.transform(
                img.size, Image.AFFINE, (1, 0, 0, 0, 1, magnitude * img.size[1] * random.choice([-1, 1])),
                fillcolor=fillcolor),
            "rotate": lambda img, magnitude: rotate_with_fill(img, magnitude),
            "color": lambda img, magnitude: ImageEnhance.Color(img).enhance(1 + magnitude * random.choice([-1, 1])),
            "posterize": lambda img, magnitude: ImageOps.posterize(img, magnitude),
            "solarize": lambda img, magnitude: ImageOps.solarize(img, magnitude),
            "contrast": lambda img, magnitude: ImageEnhance.Contrast(img).enhance(
                1 + magnitude * random.choice([-1, 1])),
            "sharpness": lambda img, magnitude: ImageEnhance.Sharpness(img).enhance(
                1 + magnitude * random.choice([-1, 1])),
            "brightness": lambda img, magnitude: ImageEnhance.Brightness(img).enhance(
                1 + magnitude * random.choice([-1, 1])),
            "autocontrast": lambda img, magnitude: ImageOps.autocontrast(img),
            "equalize": lambda img, magnitude: ImageOps.equalize(img),
            "invert": lambda img, magnitude: ImageOps.invert(img)
        }

        self.p1 = p1
        self.operation1 = func[operation1]
        self.magnitude1 = ranges[operation1][magnitude_idx1]
        self.p2 = p2
        self.operation2 = func[operation2]
        self.magnitude2 = ranges[operation2][magnitude_idx2]
        self.names, self.bins = (operation1, operation2), (magnitude_idx1, magnitude_idx2)  # added for the tests


    def __call__(self, img):
        if random.random() < self.p1: img = self.operation1(img, self.magnitude1)
        if random.random() < self.p2: img = self.operation2(img, self.magnitude2)
        return img

# --------------------------------------------------------------------------------------------------------------

NAMES = {  # the released code's op names -> bagmar.data.augment's (torchvision's)
    "invert": "Invert", "contrast": "Contrast", "rotate": "Rotate", "translateX": "TranslateX",
    "sharpness": "Sharpness", "shearY": "ShearY", "translateY": "TranslateY", "autocontrast": "AutoContrast",
    "equalize": "Equalize", "posterize": "Posterize", "color": "Color", "brightness": "Brightness",
    "solarize": "Solarize",
}
RELEASED_NAMES = {ours: theirs for theirs, ours in NAMES.items()}


class Scripted:
    """Stands in for the `random` module: hands out the given sub-policy index and uniform draws in order; a sign
    asked for after the k-th uniform draw (that is, by the op of slot k - 1) is signs[k - 1]. Counts the signs
    asked for."""

    def __init__(self, uniforms=(), signs=(), index=None):
        self.uniforms, self.signs, self.index = list(uniforms), list(signs), index
        self.uniform_draws = self.sign_draws = 0

    def random(self):
        self.uniform_draws += 1
        return self.uniforms[self.uniform_draws - 1]

    def choice(self, seq):
        assert list(seq) == [-1, 1]
        self.sign_draws += 1
        return self.signs[self.uniform_draws - 1]

    def randint(self, a, b):
        assert (a, b) == (0, 24) and self.index is not None
        return self.index


@pytest.fixture
def scripted(monkeypatch):
    """scripted(...) makes the reference's next draws those given; returns the Scripted object."""
    def install(*args, **kwargs):
        draws = Scripted(*args, **kwargs)
        monkeypatch.setitem(globals(), "random", draws)
        return draws

    return install


def _images(b, h, w, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _to_pil(img):
    return Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())


def _from_pil(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _bins(name):
    return range(10) if name in augment._RELEASED_RANGES else [None]


def _signs(name):
    return (-1, 1) if name in augment._RELEASED_SIGNED else (1,)


def _ours(images, name, bin_, sign):
    b, _, h, w = images.shape
    arguments = torch.tensor(augment._released_arguments(name, bin_, sign, h, w), dtype=torch.float64)
    return augment._apply_released_ops(images, torch.full((b,), augment._OPS.index(name)), arguments.expand(b, 6))


def _assert_equal(ours, ref, what, shear=False):
    """Bit for bit, or for the bicubic shear within SHEAR_TOLERANCE."""
    if not shear or SHEAR_TOLERANCE[0] == 0:
        assert torch.equal(ours, ref), f"{what}: {int((ours != ref).sum())} values differ"
    diff = (ours.int() - ref.int()).abs()
    assert diff.max() <= SHEAR_TOLERANCE[0] and (diff > 0).double().mean() <= SHEAR_TOLERANCE[1], what


def test_policy_table_is_the_released_one():
    """Same 25 sub-policies as torchvision's (ops, probabilities, bins), the released magnitude ranges."""
    policies = CIFAR10Policy().policies
    assert len(policies) == len(augment._POLICY) == 25
    for k, (sub, ours) in enumerate(zip(policies, augment._POLICY)):
        for slot, (name, p, bin_) in enumerate(ours):
            assert NAMES[sub.names[slot]] == name and (sub.p1, sub.p2)[slot] == p, (k, slot)
            magnitude = (sub.magnitude1, sub.magnitude2)[slot]
            if name in augment._RELEASED_RANGES:
                assert sub.bins[slot] == bin_ and magnitude == augment._RELEASED_RANGES[name][bin_], (k, slot)
            else:  # AutoContrast, Equalize, Invert: the released bin is any, its magnitude 0 and unused
                assert bin_ is None and magnitude == 0, (k, slot)
    for name, values in augment._RELEASED_RANGES.items():
        for bin_, value in enumerate(values):
            released = SubPolicy(1.0, RELEASED_NAMES[name], bin_, 0.0, "invert", 0).magnitude1
            assert type(value) is type(released.item()) and value == released, (name, bin_)  # float64 bit for bit


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("name", augment._OPS)
def test_each_op_matches_pil(name, h, w, scripted):
    """64 random images, every magnitude bin and both signs (signed ops), against the released op run by PIL."""
    images = _images(64, h, w, seed=h + w)
    for bin_ in _bins(name):
        for sign in _signs(name):
            ours = _ours(images, name, bin_, sign)
            sub = SubPolicy(1.0, RELEASED_NAMES[name], bin_ or 0, 0.0, "invert", 0)
            ref = []
            for img in images:
                draws = scripted(uniforms=[0.0, 0.5], signs=[sign, None])  # op 1 applied, op 2 (p = 0) not
                ref.append(_from_pil(sub(_to_pil(img))))
                assert draws.sign_draws == (name in augment._RELEASED_SIGNED), name  # Rotate draws no sign
            _assert_equal(ours, torch.stack(ref), f"{name} bin {bin_} sign {sign}", shear=name == "ShearY")


def test_geometric_ops_as_measured():
    """The differences from torchvision that the released geometry makes, on a 32x32 ramp: Translate by 15 / 13 /
    5 pixels at bins 9 / 8 / 3 (torchvision: 14 / 12 / 4), either sign; Rotate only counter-clockwise."""
    ramp = torch.arange(32, dtype=torch.uint8).repeat(3, 32, 1)[None] * 4 + 1  # column c holds 4c + 1, never 128
    for bin_, shift in ((9, 15), (8, 13), (3, 5)):
        for sign in (-1, 1):
            out = _ours(ramp, "TranslateX", bin_, sign)[0, 0, 0]
            filled = (out == 128).nonzero().flatten()
            assert len(filled) == shift and (filled[0] == 0 if sign < 0 else filled[-1] == 31), (bin_, sign)
    assert augment._released_arguments("Rotate", 2, -1, 32, 32) == augment._released_arguments("Rotate", 2, 1, 32, 32)
    a, b = augment._released_arguments("Rotate", 2, 1, 32, 32)[:2]
    assert math.isclose(math.degrees(math.atan2(b, a)), -20 / 3)  # PIL's inverse matrix of +6.67 degrees


def test_uniform_images(scripted):
    """Constant images: AutoContrast and Equalize leave them, Contrast's mean is the value itself."""
    images = torch.stack([torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (0, 7, 128, 255)])
    for name in ("AutoContrast", "Equalize", "Contrast", "Color", "Sharpness"):
        for bin_ in _bins(name):
            for sign in _signs(name):
                sub = SubPolicy(1.0, RELEASED_NAMES[name], bin_ or 0, 0.0, "invert", 0)
                ref = []
                for img in images:
                    scripted(uniforms=[0.0, 0.5], signs=[sign, None])
                    ref.append(_from_pil(sub(_to_pil(img))))
                _assert_equal(_ours(images, name, bin_, sign), torch.stack(ref), f"{name} {bin_} {sign}")


def _draws_around(p):
    """The largest float32 draw below p and the smallest at or above it, which random.random() < p must tell
    apart (for p = 0, which no draw is below, both 0.0)."""
    if p == 0:
        return 0.0, 0.0
    p32 = torch.tensor(p, dtype=torch.float32)
    below = p32 if p32.double() < p else torch.nextafter(p32, torch.tensor(0.0))
    return below.item(), torch.nextafter(below, torch.tensor(1.0)).item()


@pytest.mark.parametrize("h,w", SIZES[:2])
def test_sub_policies_match_pil(h, w, scripted):
    """Each sub-policy with forced draws: both ops, either, neither (draws just below / at the probability) and
    random signs, through the released SubPolicy.__call__ and through _released_ops + _apply_released_ops."""
    per = 4 * 3  # 4 combinations of applied ops, 3 sign draws each
    policy = torch.arange(25).repeat_interleave(per)
    b = len(policy)
    applied = torch.tensor([[a, c] for a in (True, False) for c in (True, False)]).repeat_interleave(3, 0).repeat(25, 1)
    prob = torch.tensor([[_draws_around(augment._POLICY[int(k)][slot][1])[0 if applied[i, slot] else 1]
                          for slot in range(2)] for i, k in enumerate(policy)])
    probs = torch.tensor([[p for _, p, _ in sub] for sub in augment._POLICY], dtype=torch.float64)[policy]
    sign = torch.randint(2, (b, 2), generator=torch.Generator().manual_seed(1))
    images = _images(b, h, w, seed=3)
    op, arguments = augment._released_ops(policy, prob, sign, h, w)
    ours = images
    for slot in range(2):
        ours = augment._apply_released_ops(ours, op[:, slot], arguments[:, slot])
    policies = CIFAR10Policy().policies
    for i in range(b):
        k = int(policy[i])
        assert ((op[i] >= 0) == (applied[i] & (probs[i] > 0))).all(), i  # the forced draws do what they should
        scripted(uniforms=[float(u) for u in prob[i]], signs=[[-1, 1][int(s)] for s in sign[i]])
        ref = _from_pil(policies[k](_to_pil(images[i])))
        _assert_equal(ours[i], ref, f"sub-policy {k}, image {i}", shear="ShearY" in (augment._POLICY[k][0][0],
                                                                                      augment._POLICY[k][1][0]))


def test_pipeline_matches_per_image_pil(scripted):
    """train_augment(policy="released") = crop, flip, the released CIFAR10Policy per image with the same draws,
    ToTensor, Cutout and normalisation."""
    b, h, w, padding, size = 64, 32, 32, 4, 16
    images = _images(b, h, w, seed=5)
    out = augment.train_augment(images, torch.Generator().manual_seed(6), padding=padding, cutout_size=size,
                                policy="released")
    draw = augment._draw(b, h, w, padding, torch.Generator().manual_seed(6))
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (augment.CIFAR_MEAN, augment.CIFAR_STD))
    policy = CIFAR10Policy()
    for i in range(b):
        padded = np.pad(images[i].permute(1, 2, 0).numpy(), ((padding, padding), (padding, padding), (0, 0)))
        crop = padded[int(draw.top[i]) : int(draw.top[i]) + h, int(draw.left[i]) : int(draw.left[i]) + w]
        img = Image.fromarray(crop[:, ::-1] if draw.flip[i] else crop)
        scripted(uniforms=[float(u) for u in draw.prob[i]], signs=[[-1, 1][int(s)] for s in draw.sign[i]],
                 index=int(draw.policy[i]))
        x = _from_pil(policy(img)).float() / 255.0
        y0, x0 = int(draw.cut_y[i]) - size // 2, int(draw.cut_x[i]) - size // 2
        x[:, max(y0, 0) : y0 + size, max(x0, 0) : x0 + size] = 0
        assert torch.equal(out[i], (x - mean) / std), i


def test_same_draws_as_torchvision():
    """Both policies read one draw: crop, flip and Cutout agree, so images that no op touched come out equal."""
    images = _images(256, 32, 32, seed=7)
    outs = [augment.train_augment(images, torch.Generator().manual_seed(8), policy=p) for p in augment.POLICIES]
    draw = augment._draw(256, 32, 32, 4, torch.Generator().manual_seed(8))
    op, _ = augment._released_ops(draw.policy, draw.prob, draw.sign, 32, 32)
    untouched = (op < 0).all(1)
    assert untouched.sum() > 20
    assert torch.equal(outs[0][untouched], outs[1][untouched])
    assert not torch.equal(outs[0], outs[1])


def test_policy_op_and_sign_frequencies():
    """Over 200,000 draws: sub-policies uniform, each op applied with its probability, signed ops negative half
    the time, Rotate never. Bound: 4 binomial standard deviations (+ 1/m for the discreteness of a rate), which a
    correct sampler exceeds with probability about 6e-5 per check (some 120 checks here)."""
    n, h, w = 200_000, 32, 32
    draw = augment._draw(n, h, w, 4, torch.Generator().manual_seed(9))
    op, arguments = augment._released_ops(draw.policy, draw.prob, draw.sign, h, w)
    counts = torch.bincount(draw.policy, minlength=25).double()
    assert (counts - n / 25).abs().max() < 4 * math.sqrt(n * (1 / 25) * (24 / 25))
    for k, sub_policy in enumerate(augment._POLICY):
        chosen = draw.policy == k
        m = int(chosen.sum())
        for slot, (name, p, bin_) in enumerate(sub_policy):
            applied = op[chosen, slot] >= 0
            assert (op[chosen, slot][applied] == augment._OPS.index(name)).all()
            rate = applied.double().mean().item()
            assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / m) + 1 / m, (k, slot, rate, p)
            values = {augment._released_arguments(name, bin_, s, h, w) for s in (-1, 1)}
            seen = arguments[chosen, slot]
            if len(values) == 1:  # unsigned (Rotate among them), or bin 0 of a signed op
                assert (seen == torch.tensor(values.pop(), dtype=torch.float64)).all(), (k, slot)
                continue
            negative = (seen == torch.tensor(augment._released_arguments(name, bin_, -1, h, w),
                                             dtype=torch.float64)).all(1).double().mean().item()
            assert abs(negative - 0.5) <= 4 * math.sqrt(0.25 / m), (k, slot, negative)


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="'torchvision', 'released'.*'PIL'"):
        augment.train_augment(_images(2, 8, 8), torch.Generator(), policy="PIL")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    """On the GPU the ops give the CPU's (PIL's) bits: every op, bin and sign, and a whole batch."""
    for h, w in SIZES:
        images = _images(64, h, w)
        for name in augment._OPS:
            for bin_ in _bins(name):
                for sign in _signs(name):
                    assert torch.equal(_ours(images.cuda(), name, bin_, sign).cpu(), _ours(images, name, bin_, sign))
    images = _images(256, 32, 32)
    draw = augment._draw(256, 32, 32, 4, torch.Generator().manual_seed(0))
    for device in ("cpu", "cuda"):
        op, arguments = augment._released_ops(draw.policy.to(device), draw.prob.to(device), draw.sign.to(device),
                                              32, 32)
        x = images.to(device)
        for slot in range(2):
            x = augment._apply_released_ops(x, op[:, slot], arguments[:, slot])
        if device == "cpu":
            cpu = x
    assert torch.equal(x.cpu(), cpu)
