"""The bit-level comparisons hold whichever CPU kernels torch dispatches to.

torch picks its vectorised kernels by CPU (ATEN_CPU_CAPABILITY caps the choice), and a different kernel may
round differently. The augmentation tests compare against torchvision bit for bit (geometric ops up to
half-pixel ties) and the released policy against Pillow bit for bit, so they are run here once under each
capability a machine of this kind can have.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
# The capability torch picks on this machine is the suite's own run of the two files; these are the others.
NATIVE = torch.backends.cpu.get_cpu_capability().lower()


@pytest.mark.parametrize("capability", [c for c in ("avx2", "avx512") if c != NATIVE])
def test_augmentation_matches_its_references_under_each_cpu_capability(capability):
    comparisons = "matches or mixed or uniform"  # the bit-level ones; draws and frequencies do not round
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", comparisons,
                          str(TESTS / "test_augment.py"), str(TESTS / "test_released_autoaugment.py")],
                         env={**os.environ, "ATEN_CPU_CAPABILITY": capability}, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
