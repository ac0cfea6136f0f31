"""benchmarks/epoch_time.py runs end to end and writes a complete record (a smoke test: no timing is asserted).

The benchmark itself is run by hand, at full size where the machine allows; its figures and the
command are in benchmarks/RESULTS.md.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "epoch_time.py"
TINY = ["--small", "--device", "cpu", "--num-classes", "10", "--train-per-class", "100", "--test-per-class", "10",
        "--image-size", "8", "--width", "2", "--batch-size", "32", "--epochs", "1", "--warmup-epochs", "0",
        "--num-workers", "1", "--fused", "3"]


@pytest.fixture(scope="module")
def epoch_time():
    spec = importlib.util.spec_from_file_location("epoch_time", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["epoch_time"] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("epoch_time", None)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_a_tiny_run_writes_a_complete_record(epoch_time, tmp_path):
    out = tmp_path / "nested" / "record.json"  # the script creates the directory
    lines = []
    returned = epoch_time.main([*TINY, "--out", str(out)], log=lines.append)
    record = json.loads(out.read_text())
    assert record == json.loads(json.dumps(returned))

    assert {"benchmark", "timestamp", "command", "machine", "device", "torch_version", "torch_threads", "loadavg",
            "sizes", "reference", "project", "ratio", "projection"} <= record.keys()
    assert record["device"]["type"] == "cpu" and record["device"]["name"]
    sizes = record["sizes"]
    assert sizes["train_images"] == 242 and sizes["steps_per_epoch"] == 242 // 32 and sizes["test_images"] == 100
    assert sizes["timed_epochs"] == 1 and sizes["full_size"] is False

    for loop in ("reference", "project"):
        result = record[loop]
        for key in ("train_per_epoch", "eval_per_epoch", "epoch_total", "train_per_step"):
            assert _positive(result[key]), (loop, key, result[key])
        assert all(_positive(s) for s in result["eval_seconds"])
        assert set(result["final_test_acc"]) == {"plain", "pn"}
    assert record["project"]["eval_source"] in {"in_trainer", "separate"}
    assert all(_positive(s) for s in record["project"]["eval_separate_seconds"])
    assert len(record["reference"]["train_seconds"]) == len(record["project"]["epoch_seconds"]) == 1
    assert all(_positive(record["ratio"][k]) for k in ("epoch_total", "train", "eval"))

    projection = record["projection"]
    assert projection["full_size"] is False
    for loop in ("reference", "project"):
        table = projection[loop]
        assert set(table["per_training_seconds"]) == {"200", "100", "50", "10"}
        assert _positive(table["one_seed_seconds"])
        assert table["three_seeds_seconds"] == pytest.approx(3 * table["one_seed_seconds"])
    assert any("ratio reference/project" in line for line in lines)
    (fused,) = record["fused"]
    assert fused["members"] == 3 and len(fused["final_test_acc"]) == 3 and _positive(fused["per_model_epoch"])
    (table,) = projection["fused"]
    assert table["models_per_job"] == 3
    assert table["three_seeds_seconds"] == pytest.approx(3 * table["one_seed_seconds"])
    assert any("\nfused x3 (float32): " in line for line in lines)


def test_the_default_size_is_the_paper_cut_at_if_100(epoch_time):
    """Full size: 100 classes x 500 cut at IF 100 = 10,847 images = 169 steps of 64 (SPEC §1)."""
    from bagmar.data.long_tail import long_tailed_counts

    size = epoch_time.FULL
    assert size.is_paper_size and (size.image_size, size.width, size.batch_size) == (32, 16, 64)
    assert (size.padding, size.cutout_size) == (4, 16)
    total = sum(long_tailed_counts(size.num_classes, size.train_per_class, size.imbalance_factor))
    assert (total, total // size.batch_size) == (10847, epoch_time.PAPER_STEPS_PER_EPOCH[100])
