"""The bit-level and equivalence comparisons hold whichever CPU kernels torch dispatches to.

torch picks its vectorised kernels by CPU (ATEN_CPU_CAPABILITY caps the choice), and a different kernel may
round differently. The augmentation tests compare against torchvision bit for bit (geometric ops up to
half-pixel ties) and the released policy against Pillow bit for bit; the fused engine's tests compare each member
of a fused group with the model trained alone (in float64, and in float32 before training amplifies rounding). Each
is run here once under each capability a machine of this kind can have, "default" (no SIMD) included.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
# The capability torch picks on this machine is the suite's own run of these files; these are the others.
NATIVE = torch.backends.cpu.get_cpu_capability().lower()
OTHERS = [c for c in ("default", "avx2", "avx512") if c != NATIVE]


def under(capability: str, *arguments: str) -> subprocess.CompletedProcess:
    """pytest with ``arguments`` in a process whose torch dispatches to ``capability``'s kernels."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *arguments],
                          env={**os.environ, "ATEN_CPU_CAPABILITY": capability}, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("capability", OTHERS)
def test_augmentation_matches_its_references_under_each_cpu_capability(capability):
    comparisons = "matches or mixed or uniform"  # the bit-level ones; draws and frequencies do not round
    run = under(capability, "-k", comparisons, str(TESTS / "test_augment.py"),
                str(TESTS / "test_released_autoaugment.py"))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


@pytest.mark.parametrize("capability", OTHERS)
def test_fused_members_train_as_alone_under_each_cpu_capability(capability):
    run = under(capability, str(TESTS / "test_fused.py"))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
