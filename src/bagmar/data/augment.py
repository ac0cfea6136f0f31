"""Training augmentation of SPEC §3, batched and on the device that holds the images.

Each image draws its own parameters, as a per-image pipeline would (RandomCrop(padding) -> RandomHorizontalFlip ->
AutoAugment CIFAR10 policy on uint8 images, fill 128 -> scaling, Cutout and normalisation), but the batch is
processed with fixed-shape tensor ops only: no per-image Python loop and no host synchronisation, so the whole
function can run on the GPU and be captured in a CUDA graph. Each op slot applies every op to the whole batch and
keeps, per image, the one that image drew (``torch.where``).

Two reproductions of the AutoAugment CIFAR10 policy, chosen by ``train_augment(policy=...)``:

``"torchvision"`` (this function's default): torchvision's ``AutoAugmentPolicy.CIFAR10``, bit for bit from its tensor code
(``transforms/_functional_tensor.py``): the images stay uint8 between ops, Python-float factors enter the blends
as float32, and the inverse affine matrices are computed in float64 like torchvision's Python floats; the four
geometric ops share a single nearest ``grid_sample`` with per-image matrices.

``"released"``: the PIL ``CIFAR10Policy`` that the paper's released code used (DeepVoltaire/AutoAugment,
``autoaugment.py``, widely copied), which applies the same 25 sub-policies (same ops, probabilities and magnitude
bins) with different op implementations, reproduced from Pillow's C code (``libImaging``):

* Rotate: always by +magnitude (that code draws no sign for it), PIL's NEAREST in 16.16 fixed point, fill 128;
* TranslateX/Y: a float offset of magnitude * size pixels (PIL's nearest affine: 15 / 13 / 5 px at 32 px where
  torchvision truncates to 14 / 12 / 4);
* ShearY: PIL's BICUBIC (its a = -1 cubic, edge rows clamped, fill 128 where the source point leaves the image,
  the result truncated), in float64 like PIL; with the column unchanged by a shear along y, only rows interpolate;
* magnitude ranges from ``np.linspace`` in float64 (Solarize thresholds ``linspace(256, 0, 10)``, so bin 0
  solarizes nothing), probabilities tested with ``<`` (``random.random() < p``);
* Color/Contrast/Sharpness/Brightness: ImageEnhance's ``Image.blend(degenerate, image, factor)`` =
  degenerate + factor * (image - degenerate) in float32, clipped and truncated, with PIL's degenerate images (L by
  PIL's fixed-point luma, the rounded mean of that L image, the 3x3 SMOOTH filter with the border kept, black);
* AutoContrast: ImageOps' per-channel table int(ix * scale + offset) in float64 (torchvision's float32
  (ix - lo) * scale truncates differently for some (lo, hi));
* Posterize, Solarize (given the threshold), Equalize and Invert compute the same as torchvision's and are shared.

Both are exact against their reference (``tests/test_augment.py``, ``tests/test_released_autoaugment.py``):
torchvision's up to nearest-neighbour ties at half pixels, PIL's bit for bit. Both exist because the paper's
numbers came from the PIL one (the trainings' default, ``recipe.autoaugment: released``, as SPEC §3 asks), while
torchvision's is the one a reader of SPEC's list or the parity benchmark's reference loop expects. Crop, flip, Cutout and normalisation, and every random draw (``_draw``),
are the same for both.
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
POLICIES = ("torchvision", "released", "none")  # train_augment's `policy`: see the module docstring
# torchvision's AutoAugmentPolicy.CIFAR10: 25 sub-policies of two (name, probability, magnitude bin).
# Written out rather than imported: importing torchvision costs every training job over a second;
# tests/test_augment.py checks this table against torchvision's. The released CIFAR10Policy has the same table
# (it gives magnitude-free ops an unused bin); tests/test_released_autoaugment.py checks that.
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
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    padding: int = 4,
    cutout_size: int = 16,
    policy: str = "torchvision",
) -> torch.Tensor:
    """images: uint8 (B, 3, H, W) on the generator's device. Returns float32 (B, 3, H, W), normalised.

    Order per SPEC §3: random crop HxW from the image zero-padded by `padding`; horizontal flip p=0.5;
    one of the 25 AutoAugment CIFAR10 sub-policies per image (uniform choice, each op applied with its own
    probability, magnitudes and signs as `policy` draws them, fill 128 for geometric ops): `policy="torchvision"`
    is torchvision's AutoAugmentPolicy.CIFAR10 (NEAREST interpolation), `policy="released"` the released code's
    PIL CIFAR10Policy (see the module docstring), `policy="none"` none (the draws are made all the same, so that
    the crop and flip are those of the other policies); scale to [0,1]; Cutout: one cutout_size x cutout_size hole
    centred at a uniform pixel, clipped at the border, set to 0; normalise with CIFAR_MEAN/CIFAR_STD.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(map(repr, POLICIES))}, not {policy!r}")
    b, _, h, w = images.shape
    draw = _draw(b, h, w, padding, generator)
    x = _crop_flip(images, draw.top, draw.left, draw.flip, padding)
    if policy == "torchvision":
        op, magnitude = _policy_ops(draw.policy, draw.prob, draw.sign, h, w)
        for slot in range(2):
            x = _apply_ops(x, op[:, slot], magnitude[:, slot])
    elif policy == "released":
        op, arguments = _released_ops(draw.policy, draw.prob, draw.sign, h, w)
        for slot in range(2):
            x = _apply_released_ops(x, op[:, slot], arguments[:, slot])
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
    prob: torch.Tensor  # (B, 2) uniform; op k applies when prob[:, k] <= its probability (torchvision), < (released)
    sign: torch.Tensor  # (B, 2) 0 or 1; 0 negates a signed magnitude (torchvision; released: random.choice -1)
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


def _smooth(img: torch.Tensor) -> torch.Tensor:
    """The 3x3 smoothing (weights 1, centre 5, over 13) of the interior, rounded; the border is kept.

    torchvision's (its float32 convolution, rounded) and PIL's ImageFilter.SMOOTH (float kernel 1/13, 5/13,
    + 0.5 and truncation) alike: n/13 is never a half-integer and neither float sum strays near one, so both
    equal round(n/13) = (n + 6) // 13 on the exact integer sum n, which no TF32/autocast setting can disturb.
    """
    x = img.float()
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]  # 3x3 box sum, separably
    n = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :] + 4 * x[..., 1:-1, 1:-1]
    smooth = img.clone()
    smooth[..., 1:-1, 1:-1] = torch.div(n + 6, 13, rounding_mode="floor").to(torch.uint8)
    return smooth


def _sharpness(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _blend(img, _smooth(img), 1.0 + m)


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


# --- policy="released": the released code's PIL CIFAR10Policy ---------------------------------------------------
# DeepVoltaire/AutoAugment, autoaugment.py (class SubPolicy, CIFAR10Policy); tests/test_released_autoaugment.py
# holds a copy and checks every op, bin and sign against Pillow itself.


def _linspace10(start: float, stop: float) -> list[float]:
    """np.linspace(start, stop, 10) in float64 as numpy computes it: i * ((stop - start) / 9) + start, last = stop."""
    step = (stop - start) / 9
    return [i * step + start for i in range(9)] + [float(stop)]


# SubPolicy's `ranges` for the ops of the CIFAR10 policy. Only TranslateX/Y scale with the image (by its width /
# height, where the op is applied); AutoContrast, Equalize and Invert take no magnitude.
_RELEASED_RANGES = {
    "Rotate": _linspace10(0.0, 30.0),
    "ShearY": _linspace10(0.0, 0.3),
    "TranslateX": _linspace10(0.0, 150 / 331),
    "TranslateY": _linspace10(0.0, 150 / 331),
    "Brightness": _linspace10(0.0, 0.9),
    "Color": _linspace10(0.0, 0.9),
    "Contrast": _linspace10(0.0, 0.9),
    "Sharpness": _linspace10(0.0, 0.9),
    "Posterize": [round(v) for v in _linspace10(8.0, 4.0)],  # np.round(...).astype(int): 8 8 7 7 6 6 5 5 4 4
    "Solarize": _linspace10(256.0, 0.0),  # the threshold: pixels >= it are inverted; 256 inverts none
}
# The ops whose lambda multiplies the magnitude by random.choice([-1, 1]) each time it is applied. Not Rotate:
# rotate_with_fill(img, magnitude) always turns counter-clockwise.
_RELEASED_SIGNED = ("ShearY", "TranslateX", "TranslateY", "Brightness", "Color", "Contrast", "Sharpness")
_ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")  # ImageEnhance.*(img).enhance(1 + magnitude * sign)


def _pil_rotate_matrix(angle: float, w: int, h: int) -> tuple[float, ...]:
    """The AFFINE data that Image.rotate(angle) (no center, translate or expand) hands to transform, as PIL computes
    it. Its shortcuts for 0 (a copy, which this identity matrix reproduces), 90, 180 and 270 degrees are out of the
    policy's reach (0 to 30 degrees)."""
    angle = -math.radians(angle % 360.0)
    a, b, d, e = (round(v, 15) for v in (math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)))
    cx, cy = w / 2, h / 2
    return (a, b, a * -cx + b * -cy + 0.0 + cx, d, e, d * -cx + e * -cy + 0.0 + cy)


def _released_arguments(name: str, bin_: int | None, sign: int, h: int, w: int) -> tuple[float, ...]:
    """Six floats: what the released SubPolicy hands PIL for op `name` at magnitude bin `bin_` when its
    random.choice([-1, 1]) gives `sign` (unsigned ops ignore it). Geometric ops: the AFFINE data (a, b, c, d, e, f)
    of img.transform (Rotate's as Image.rotate builds it); the others (value, 0, 0, 0, 0, 0) with value the
    ImageEnhance factor, the posterize bits or the solarize threshold (0 where the op takes no magnitude)."""
    m = _RELEASED_RANGES[name][bin_] if name in _RELEASED_RANGES else 0.0
    if name == "Rotate":
        return _pil_rotate_matrix(m, w, h)
    if name == "ShearY":
        return (1.0, 0.0, 0.0, m * sign, 1.0, 0.0)
    if name == "TranslateX":
        return (1.0, 0.0, m * w * sign, 0.0, 1.0, 0.0)
    if name == "TranslateY":
        return (1.0, 0.0, 0.0, 0.0, 1.0, m * h * sign)
    return (float(1 + m * sign if name in _ENHANCE else m), 0.0, 0.0, 0.0, 0.0, 0.0)


@functools.lru_cache
def _released_tables(h: int, w: int, device: torch.device):
    """(25, 2) op index, (25, 2, 2, 6) float64 arguments for sign -1 and +1, (25, 2) float64 probability."""
    steps = [step for sub_policy in _POLICY for step in sub_policy]
    op = [_OPS.index(name) for name, _, _ in steps]
    arguments = [[_released_arguments(name, bin_, sign, h, w) for sign in (-1, 1)] for name, _, bin_ in steps]
    prob = [p for _, p, _ in steps]
    return (
        torch.tensor(op, dtype=torch.long, device=device).view(-1, 2),
        torch.tensor(arguments, dtype=torch.float64, device=device).view(-1, 2, 2, 6),
        torch.tensor(prob, dtype=torch.float64, device=device).view(-1, 2),
    )


def _released_ops(policy: torch.Tensor, prob: torch.Tensor, sign: torch.Tensor, h: int, w: int):
    """Per image and slot: op index (-1 unless prob < the op's probability, as random.random() < p) and the op's
    six PIL arguments for the image's sign (sign 0 stands for random.choice's -1)."""
    ops, arguments, probs = (t[policy] for t in _released_tables(h, w, policy.device))
    op = torch.where(prob.double() < probs, ops, -1)
    return op, torch.where((sign == 1)[..., None], arguments[:, :, 1], arguments[:, :, 0])


def _apply_released_ops(images: torch.Tensor, op: torch.Tensor, arguments: torch.Tensor) -> torch.Tensor:
    """One op of the released policy per image: image i gets _OPS[op[i]] (none if -1) with PIL's arguments[i].

    images uint8 (B, 3, H, W); op long (B,); arguments float64 (B, 6), as `_released_arguments` gives them.
    """
    def pick(chosen, result, rest):
        return torch.where(chosen.view(-1, 1, 1, 1), result, rest)

    def chose(name):
        return op == _OPS.index(name)

    geometric = chose("Rotate") | chose("ShearY") | chose("TranslateX") | chose("TranslateY")
    out = pick(geometric, _pil_geometric(images, chose("ShearY"), arguments), images)
    value = arguments[:, 0].view(-1, 1, 1, 1)
    for name in _POINTWISE:
        out = pick(chose(name), _RELEASED_POINTWISE[name](images, value), out)
    return out


def _pil_geometric(images: torch.Tensor, bicubic: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """PIL's img.transform(size, AFFINE, a[i], fillcolor=128) per image: BICUBIC where `bicubic` (ShearY), else
    NEAREST (Rotate, TranslateX/Y). The four ops share one pass, as torchvision's share one grid_sample.

    Every output pixel gathers four source pixels down one column and combines them with the cubic of PIL's
    BICUBIC macro (a = -1): v = p1 + d (p2 + d (p3 + d p4)), p1 = v2, p2 = v3 - v1, p3 = 2 (v1 - v2) + v3 - v4,
    p4 = v2 - v1 - v3 + v4, in float64 in PIL's order, clipped to [0, 255] and truncated. A nearest sample is the
    same pass with all four at the nearest source pixel and d = 0, where the cubic gives that pixel exactly.
    Points outside the image give the fill.
    """
    b, c, h, w = images.shape
    dev = images.device
    row, col, inside = _pil_nearest_source(a, h, w)
    top, d, shear_inside = _pil_shear_y_source(a[:, 3], h, w)
    bicubic = bicubic.view(b, 1, 1)
    # the images with two edge rows repeated above and below, so that rows top - 1 .. top + 2 need no clamping
    padded = images.short()[:, :, torch.arange(-2, h + 2, device=dev).clamp(0, h - 1)].flatten(2)
    centre = torch.where(bicubic, top.clamp(-1, h - 1), row.clamp(0, h - 1)) + 2  # padded row of v2
    index = centre * w + torch.where(bicubic, torch.arange(w, device=dev), col.clamp(0, w - 1))
    v1, v2, v3, v4 = (padded.gather(2, (index + k * w).view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
                      for k in (-1, 0, 1, 2))
    p = (v2, v3 - v1, 2 * (v1 - v2) + v3 - v4, v2 - v1 - v3 + v4)  # exact integers (int16) in any order
    p1, p2, p3, p4 = (pk.double() for pk in p)
    d = torch.where(bicubic, d, 0.0)[:, None]
    v = p4.mul_(d).add_(p3).mul_(d).add_(p2).mul_(d).add_(p1)  # p1 + d (p2 + d (p3 + d p4)), in place
    inside = torch.where(bicubic, shear_inside, inside)[:, None]
    return torch.where(inside, v.clamp_(0, 255).to(torch.uint8), int(FILL))


def _pil_nearest_source(a: torch.Tensor, h: int, w: int):
    """Where PIL's NEAREST affine transform (Geometry.c) samples: (B, H, W) source row and column, and whether
    that pixel is inside the image (else the fill). a: (B, 6) float64.

    ImagingTransformAffine takes one of two paths. Without rotation or shear (a[1] == a[3] == 0, the
    translations) ImagingScaleAffine samples column floor(a[2] + a[0] * 0.5 + x * a[0]), and likewise rows; PIL
    accumulates x * a[0] as a running sum, which can round differently only within ~1e-13 of an integer, and the
    policy's offsets stay far from one (15.0015, 13.39, 5.33 at 32 px). Otherwise (Rotate) affine_fixed works in
    16.16 fixed point: FIX(v) = floor(v * 65536 + 0.5) of the coefficients, summed as integers, shifted down 16
    bits (PIL takes that path when the corners fit its fixed range, as for every image under 32768 pixels).
    """
    b = a.shape[0]
    a0, a1, a2, a3, a4, a5 = a.view(b, 6, 1, 1).unbind(1)
    x = torch.arange(w, device=a.device).view(1, 1, w)
    y = torch.arange(h, device=a.device).view(1, h, 1)

    def fix(v):
        return torch.floor(v * 65536.0 + 0.5).long()

    col_fixed = (fix(a2 + a0 * 0.5 + a1 * 0.5) + x * fix(a0) + y * fix(a1)) >> 16
    row_fixed = (fix(a5 + a3 * 0.5 + a4 * 0.5) + x * fix(a3) + y * fix(a4)) >> 16
    scale = (a1 == 0) & (a3 == 0)
    col = torch.where(scale, torch.floor(a2 + a0 * 0.5 + x * a0).long(), col_fixed)
    row = torch.where(scale, torch.floor(a5 + a4 * 0.5 + y * a4).long(), row_fixed)
    return row, col, (col >= 0) & (col < w) & (row >= 0) & (row < h)


def _pil_shear_y_source(shear: torch.Tensor, h: int, w: int):
    """Where PIL's BICUBIC transform with AFFINE data (1, 0, 0, shear, 1, 0) samples: (B, H, W) row above the
    point (floor), offset d in [0, 1) below it (float64), and whether the point is inside the image.

    affine_transform maps the output pixel centre (x + 0.5, y + 0.5) to (x + 0.5, shear * (x + 0.5) + (y + 0.5));
    bicubic_filter32RGB gives the fill where that lies outside [0, W) x [0, H), else moves it back half a pixel
    and interpolates around it, rows beyond the edge repeating the edge row (its YCLIP and v = previous row). The
    column is x exactly, with offset 0, where the cubic returns the pixel itself: only the rows interpolate.
    """
    x = torch.arange(w, dtype=torch.float64, device=shear.device).view(1, 1, w) + 0.5
    y = torch.arange(h, dtype=torch.float64, device=shear.device).view(1, h, 1) + 0.5
    source = shear.view(-1, 1, 1) * x + y  # a3 * xin + a4 * yin + a5, with a4 = 1 and a5 = 0
    inside = (source >= 0) & (source < h)
    source = source - 0.5
    top = torch.floor(source)
    return top.long(), source - top, inside


def _pil_blend(degenerate: torch.Tensor, img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Image.blend(degenerate, img, factor), every ImageEnhance class's `enhance` (Blend.c): the factor as a C
    float, degenerate + factor * (img - degenerate) in float32, clipped to [0, 255] and truncated."""
    d = degenerate.float()
    return (d + factor.float() * (img.float() - d)).clamp(0, 255).to(torch.uint8)


def _pil_luma(img: torch.Tensor) -> torch.Tensor:
    """convert("L") (Convert.c, L24): (19595 R + 38470 G + 7471 B + 0x8000) >> 16, as (B, 1, H, W) int32."""
    r, g, b = img.int().unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).unsqueeze(1)


def _pil_contrast(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast: blend with int(mean + 0.5) of the L image, computed exactly as (2 sum + n) // 2n."""
    n = img.shape[-2] * img.shape[-1]
    total = _pil_luma(img).sum(dim=(-3, -2, -1), keepdim=True, dtype=torch.int64)
    return _pil_blend(torch.div(2 * total + n, 2 * n, rounding_mode="floor"), img, factor)


def _pil_autocontrast(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast(img): per channel, the lookup table ix -> int(ix * scale + offset), scale =
    255.0 / (hi - lo) and offset = -lo * scale in float64, clipped to [0, 255]; the identity where hi == lo."""
    b, c = img.shape[:2]
    lo = img.amin(dim=(-2, -1)).double().view(b, c, 1)
    hi = img.amax(dim=(-2, -1)).double().view(b, c, 1)
    flat = hi <= lo
    # a true division (a Python number / tensor is reciprocal-then-multiply in torch, not correctly rounded)
    scale = torch.div(torch.full_like(hi, 255.0), torch.where(flat, 1.0, hi - lo))
    ix = torch.arange(256, device=img.device)
    lut = torch.where(flat, ix.to(torch.uint8), (ix * scale + -lo * scale).clamp_(0, 255).to(torch.uint8))
    return lut.gather(2, img.flatten(2).long()).view_as(img)  # lut: (B, 3, 256)


_RELEASED_POINTWISE = {
    **_POINTWISE_OPS,  # Posterize, Solarize, Equalize, Invert: the same arithmetic, given PIL's bits / threshold
    "Brightness": lambda img, f: _pil_blend(torch.zeros_like(img), img, f),
    "Color": lambda img, f: _pil_blend(_pil_luma(img), img, f),
    "Contrast": _pil_contrast,
    "Sharpness": lambda img, f: _pil_blend(_smooth(img), img, f),
    "AutoContrast": _pil_autocontrast,
}
