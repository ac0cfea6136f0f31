"""Training augmentation of SPEC §3, batched and on the device that holds the images.

Each image draws its own parameters, as torchvision's per-image pipeline would
(RandomCrop(padding) -> RandomHorizontalFlip -> AutoAugment(CIFAR10, fill=128) on uint8 tensors, then scaling,
Cutout and normalisation), but the batch is processed with fixed-shape tensor ops only: no per-image Python loop
and no host synchronisation, so the whole function can run on the GPU and be captured in a CUDA graph.

AutoAugment is reproduced bit for bit from torchvision's tensor code (``transforms/_functional_tensor.py``):
the images stay uint8 between ops, Python-float factors enter the blends as float32, and the inverse affine
matrices are computed in float64 like torchvision's Python floats. Each op slot applies every op to the whole
batch and keeps, per image, the one that image drew (``torch.where``); the four geometric ops share a single
``grid_sample`` with per-image matrices.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

FILL = 128.0  # SPEC §3: fill value of the geometric ops
# torchvision's AutoAugmentPolicy.CIFAR10: 25 sub-policies of two (name, probability, magnitude bin).
# Written out rather than imported: importing torchvision costs every training job over a second;
# tests/test_augment.py checks this table against torchvision's.
_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)
_GEOMETRIC = ("Rotate", "ShearY", "TranslateX", "TranslateY")
_POINTWISE = (
    "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert"
)
_OPS = _GEOMETRIC + _POINTWISE  # the 13 ops of the CIFAR10 policy; index -1 means "not applied"
_SIGNED = ("Rotate", "ShearY", "TranslateX", "TranslateY", "Brightness", "Color", "Contrast", "Sharpness")


def train_augment(
    images: torch.Tensor, generator: torch.Generator, *, padding: int = 4, cutout_size: int = 16
) -> torch.Tensor:
    """images: uint8 (B, 3, H, W) on the generator's device. Returns float32 (B, 3, H, W), normalised.

    Order per SPEC §3: random crop HxW from the image zero-padded by `padding`; horizontal flip p=0.5;
    one of the 25 torchvision AutoAugmentPolicy.CIFAR10 sub-policies per image (uniform choice, each op applied
    with its own probability, magnitudes/signs as torchvision draws them, fill 128 for geometric ops, NEAREST
    interpolation); scale to [0,1]; Cutout: one cutout_size x cutout_size hole centred at a uniform pixel,
    clipped at the border, set to 0; normalise with CIFAR_MEAN/CIFAR_STD.
    """
    b, _, h, w = images.shape
    draw = _draw(b, h, w, padding, generator)
    x = _crop_flip(images, draw.top, draw.left, draw.flip, padding)
    op, magnitude = _policy_ops(draw.policy, draw.prob, draw.sign, h, w)
    for slot in range(2):
        x = _apply_ops(x, op[:, slot], magnitude[:, slot])
    return _normalize(_cutout(x.float() / 255.0, draw.cut_y, draw.cut_x, cutout_size))


def test_transform(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float32 scaled to [0,1] and normalised."""
    return _normalize(images.float() / 255.0)


test_transform.__test__ = False  # a transform, not a pytest test, when imported into a test module


class _Draw(NamedTuple):
    """Every random number one batch needs, drawn up front in a fixed order with fixed shapes."""

    top: torch.Tensor  # (B,) crop offsets in the padded image, 0..2*padding
    left: torch.Tensor
    flip: torch.Tensor  # (B,) bool
    policy: torch.Tensor  # (B,) sub-policy index, 0..24
    prob: torch.Tensor  # (B, 2) uniform; op k is applied when prob[:, k] <= its probability (torchvision)
    sign: torch.Tensor  # (B, 2) 0 or 1; 0 negates a signed magnitude (torchvision)
    cut_y: torch.Tensor  # (B,) Cutout centre
    cut_x: torch.Tensor


def _draw(b: int, h: int, w: int, padding: int, generator: torch.Generator) -> _Draw:
    kw = {"generator": generator, "device": generator.device}
    return _Draw(
        top=torch.randint(2 * padding + 1, (b,), **kw),
        left=torch.randint(2 * padding + 1, (b,), **kw),
        flip=torch.rand(b, **kw) < 0.5,
        policy=torch.randint(len(_POLICY), (b,), **kw),
        prob=torch.rand(b, 2, **kw),
        sign=torch.randint(2, (b, 2), **kw),
        cut_y=torch.randint(h, (b,), **kw),
        cut_x=torch.randint(w, (b,), **kw),
    )


def _crop_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int):
    """Crop of the zero-padded images at (top, left), mirrored where `flip`, as two gathers."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = top[:, None] + torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - cols, cols)
    x = padded.gather(2, rows[:, None, :, None].expand(b, c, h, padded.shape[3]))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _cutout(x: torch.Tensor, cut_y: torch.Tensor, cut_x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero rows [y - size//2, y - size//2 + size) x the same for columns, clipped by the image border."""
    def inside(cut, n):
        start = cut[:, None] - size // 2
        pos = torch.arange(n, device=x.device)
        return (pos >= start) & (pos < start + size)

    hole = inside(cut_y, x.shape[-2])[:, :, None] & inside(cut_x, x.shape[-1])[:, None, :]
    return torch.where(hole[:, None], 0.0, x)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean, std = _mean_std(x.device)
    return (x - mean) / std


@functools.lru_cache
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached per device so that a call copies nothing from the host."""
    return tuple(torch.tensor(v, device=device).view(-1, 1, 1) for v in (CIFAR_MEAN, CIFAR_STD))


def _magnitude_bins(h: int, w: int) -> dict[str, torch.Tensor]:
    """torchvision's AutoAugment._augmentation_space(10, (h, w)) for the ops of the CIFAR10 policy."""
    bins = 10
    return {
        "Rotate": torch.linspace(0.0, 30.0, bins),
        "ShearY": torch.linspace(0.0, 0.3, bins),
        "TranslateX": torch.linspace(0.0, 150.0 / 331.0 * w, bins),
        "TranslateY": torch.linspace(0.0, 150.0 / 331.0 * h, bins),
        "Brightness": torch.linspace(0.0, 0.9, bins),
        "Color": torch.linspace(0.0, 0.9, bins),
        "Contrast": torch.linspace(0.0, 0.9, bins),
        "Sharpness": torch.linspace(0.0, 0.9, bins),
        "Posterize": 8 - (torch.arange(bins) / ((bins - 1) / 4)).round().int(),
        "Solarize": torch.linspace(255.0, 0.0, bins),
    }


@functools.lru_cache
def _policy_tables(h: int, w: int, device: torch.device):
    """(25, 2) op index, unsigned magnitude (float64, as torchvision's `.item()`), probability, signed flag."""
    space = _magnitude_bins(h, w)
    steps = [step for sub_policy in _POLICY for step in sub_policy]
    op = [_OPS.index(name) for name, _, _ in steps]
    magnitude = [0.0 if bin_ is None else float(space[name][bin_]) for name, _, bin_ in steps]
    prob = [p for _, p, _ in steps]
    signed = [name in _SIGNED for name, _, _ in steps]
    return tuple(
        torch.tensor(v, dtype=t, device=device).view(-1, 2)
        for v, t in ((op, torch.long), (magnitude, torch.float64), (prob, torch.float32), (signed, torch.bool))
    )


def _policy_ops(policy: torch.Tensor, prob: torch.Tensor, sign: torch.Tensor, h: int, w: int):
    """Per image and slot: op index (-1 where the op's probability test fails) and signed magnitude."""
    ops, magnitudes, probs, signed = (t[policy] for t in _policy_tables(h, w, policy.device))
    op = torch.where(prob <= probs, ops, -1)
    return op, torch.where(signed & (sign == 0), -magnitudes, magnitudes)


def _apply_ops(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """One AutoAugment op per image: image i gets _OPS[op[i]] (none if -1) at torchvision's magnitude[i].

    images uint8 (B, 3, H, W); op long (B,); magnitude float64 (B,), the value torchvision's `_apply_op` receives.
    """
    def pick(chosen, result, rest):
        return torch.where(chosen.view(-1, 1, 1, 1), result, rest)

    h, w = images.shape[-2:]
    out = pick((op >= 0) & (op < len(_GEOMETRIC)), _warp(images, _inverse_affine(op, magnitude, h, w)), images)
    m = magnitude.view(-1, 1, 1, 1)
    for name in _POINTWISE:
        out = pick(op == _OPS.index(name), _POINTWISE_OPS[name](images, m), out)
    return out


def _inverse_affine(op: torch.Tensor, magnitude: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 2, 3) float32 matrices of torchvision's `_get_inverse_affine_matrix`, identity for non-geometric ops.

    Mirrors how AutoAugment calls F.rotate(m) (its matrix uses -m, about the centre), F.affine(translate=int(m))
    and F.affine(shear=degrees(atan(m)), center=[0, 0], i.e. the top-left corner), with torchvision's
    operation order in float64 so the float32 matrices come out the same. Shear x is always 0 here,
    which reduces torchvision's b and d to -sin(rot) and cos(rot) with identical values.
    """
    def where(name, value):
        return torch.where(op == _OPS.index(name), value, 0.0)

    to_rad = math.pi / 180.0  # math.radians; math.degrees multiplies by 180.0 / math.pi
    rot = where("Rotate", -magnitude) * to_rad
    sy = where("ShearY", torch.atan(magnitude) * (180.0 / math.pi)) * to_rad
    tx, ty = where("TranslateX", magnitude.trunc()), where("TranslateY", magnitude.trunc())
    cx = where("ShearY", torch.full_like(magnitude, -0.5 * w))
    cy = where("ShearY", torch.full_like(magnitude, -0.5 * h))
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).view(-1, 2, 3).float()


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """torchvision's _gen_affine_grid + _apply_grid_transform (nearest, fill via a mask channel), batched.

    The grid is built elementwise rather than with torchvision's bmm so that no TF32/autocast matmul setting
    can perturb it; the two differ at most in the last bit, which moves a nearest sample only at an exact tie.
    """
    b, _, h, w = images.shape
    dev = images.device
    x = torch.linspace(-w * 0.5 + 0.5, w * 0.5 + 0.5 - 1, steps=w, device=dev).view(1, 1, w)
    y = torch.linspace(-h * 0.5 + 0.5, h * 0.5 + 0.5 - 1, steps=h, device=dev).view(1, h, 1)
    t = theta.view(b, 6, 1, 1).unbind(1)
    s = [t[i] / (0.5 * w) for i in range(3)] + [t[i] / (0.5 * h) for i in range(3, 6)]
    grid = torch.stack([x * s[0] + y * s[1] + s[2], x * s[3] + y * s[4] + s[5]], dim=-1)
    planes = torch.cat([images.float(), images.new_ones(b, 1, h, w, dtype=torch.float32)], 1)
    out = F.grid_sample(planes, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return torch.where(out[:, -1:] < 0.5, FILL, out[:, :-1]).round().to(torch.uint8)


def _blend(img1: torch.Tensor, img2, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend: its Python-float ratio and 1 - ratio meet the image as float32; uint8 truncation."""
    return (ratio.float() * img1 + (1.0 - ratio).float() * img2).clamp(0, 255).to(torch.uint8)


def _grayscale(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(1)


def _sharpness(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with the 3x3 smoothing (weights 1, centre 5, over 13) of the interior; the border is kept.

    torchvision rounds the float32 convolution; n/13 is never a half-integer, so round(n/13) = (n + 6) // 13
    on the exact integer sum n, which no TF32/autocast setting can disturb.
    """
    x = img.float()
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]  # 3x3 box sum, separably
    n = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :] + 4 * x[..., 1:-1, 1:-1]
    smooth = img.clone()
    smooth[..., 1:-1, 1:-1] = torch.div(n + 6, 13, rounding_mode="floor").to(torch.uint8)
    return _blend(img, smooth, 1.0 + m)


def _posterize(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    bits = m.trunc().clamp(0, 8)  # clamped only to keep the other ops' magnitudes harmless
    return img & (256 - torch.exp2(8 - bits)).to(torch.uint8)


def _autocontrast(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    lo = img.amin(dim=(-2, -1), keepdim=True).float()
    hi = img.amax(dim=(-2, -1), keepdim=True).float()
    constant = hi == lo  # torchvision: the non-finite scale of a constant channel leaves it unchanged
    scale = torch.where(constant, 1.0, 255 / (hi - lo))
    return ((img - torch.where(constant, 0.0, lo)) * scale).clamp(0, 255).to(torch.uint8)


def _equalize(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """torchvision's per-channel equalize, all channels of all images at once through (B*3, 256) histograms.

    torchvision's step is the pixel count outside the last non-empty bin (the channel maximum), // 255;
    a channel with step 0 is left unchanged.
    """
    flat = img.flatten(2).flatten(0, 1).long()  # (B*3, H*W)
    hist = torch.zeros(flat.shape[0], 256, dtype=torch.long, device=img.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    step = (flat.shape[1] - hist.gather(1, flat.amax(1, keepdim=True))) // 255
    lut = (hist.cumsum(1) + step // 2) // step.clamp(min=1)
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = torch.where(step == 0, flat, lut.gather(1, flat))
    return out.to(torch.uint8).view_as(img)


_POINTWISE_OPS = {
    "Brightness": lambda img, m: _blend(img, torch.zeros_like(img), 1.0 + m),
    "Color": lambda img, m: _blend(img, _grayscale(img), 1.0 + m),
    "Contrast": lambda img, m: _blend(img, _grayscale(img).float().mean(dim=(-3, -2, -1), keepdim=True), 1.0 + m),
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": lambda img, m: torch.where(img >= m.float(), 255 - img, img),
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
    "Invert": lambda img, m: 255 - img,
}
