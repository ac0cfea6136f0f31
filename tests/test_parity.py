"""Benchmarks/parity.py (the fast trainer against the reference-style loop, paired by seed) runs end to
end and writes a well-formed record; its statistics are right on a hand-computed example.

A smoke test only: at this size (tiny synthetic set, 2 seeds, 1 epoch, width 2) nothing about accuracy parity
can be decided, so no accuracy and no timing is asserted. The decisive comparison is the benchmark run by hand
on CIFAR-10-LT; its command and figures are in benchmarks/RESULTS.md.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "parity.py"
TINY = ["--data", "synthetic", "--num-classes", "10", "--train-per-class", "120", "--test-per-class", "10",
        "--image-size", "8", "--imbalance", "10", "--width", "2", "--batch-size", "32", "--epochs", "2",
        "--num-workers", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def parity():
    had_epoch_time, threads = "epoch_time" in sys.modules, torch.get_num_threads()
    spec = importlib.util.spec_from_file_location("parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["parity"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        torch.set_num_threads(threads)  # the runs below set 1 thread for the whole process
        sys.modules.pop("parity", None)
        if not had_epoch_time:  # parity.py registers benchmarks/epoch_time.py under its name
            sys.modules.pop("epoch_time", None)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_the_paired_statistics_match_a_hand_computed_example(parity):
    # differences fast - reference = [1, 2, 3, 6]: mean 3, sd sqrt(14/3) = 2.1602, se = sd / 2 = 1.0801,
    # t(0.975, 3) = 3.1824, so the 95 % interval is 3 -+ 3.4374
    stats = parity.paired_statistics([10.0, 20.0, 30.0, 40.0], [11.0, 22.0, 33.0, 46.0], target_se=1.0)
    assert stats["n"] == 4 and stats["applicable"]
    assert stats["reference_mean"] == pytest.approx(25.0) and stats["fast_mean"] == pytest.approx(28.0)
    assert stats["mean_diff"] == pytest.approx(3.0)
    assert stats["sd_diff"] == pytest.approx(math.sqrt(14 / 3))
    assert stats["se_diff"] == pytest.approx(math.sqrt(14 / 3) / 2)
    assert stats["t_quantile"] == pytest.approx(3.1824, abs=1e-4)
    assert stats["ci_lower"] == pytest.approx(3 - 3.1824 * 1.0801, abs=1e-3)
    assert stats["ci_upper"] == pytest.approx(3 + 3.1824 * 1.0801, abs=1e-3)
    assert stats["seeds_for_target_se"] == 5  # (2.1602 / 1.0) ** 2 = 4.67


def test_missing_pairs_are_left_out_and_one_pair_has_no_interval(parity):
    stats = parity.paired_statistics([50.0, None, float("nan")], [52.0, 60.0, 61.0])
    assert stats["n"] == 1 and stats["mean_diff"] == pytest.approx(2.0)
    assert stats["sd_diff"] is None and stats["ci_lower"] is None and stats["ci_upper"] is None
    assert parity.paired_statistics([None], [None])["applicable"] is False


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (9, 2.2622), (30, 2.0423),
                                          (100, 1.9840)])
def test_t_quantiles(parity, df, expected):
    assert parity.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_seed_lists(parity):
    assert parity.parse_seeds(["0-3"]) == [0, 1, 2, 3]
    assert parity.parse_seeds(["5", "1,2", "7-8"]) == [1, 2, 5, 7, 8]
    with pytest.raises(SystemExit):
        parity.parse_seeds(["3-1"])


def test_a_tiny_run_writes_a_well_formed_record_and_resumes(parity, tmp_path):
    out = tmp_path / "nested" / "parity.json"
    lines = []
    returned = parity.main([*TINY, "--seeds", "0", "--out", str(out)], log=lines.append)
    record = json.loads(out.read_text())
    assert record == json.loads(json.dumps(returned))
    assert [run["seed"] for run in record["runs"]] == [0] and record["complete"]

    # --resume keeps seed 0 (not trained again) and adds seed 1
    lines = []
    returned = parity.main([*TINY, "--seeds", "0-1", "--resume", str(out)], log=lines.append)
    record = json.loads(out.read_text())
    assert record == json.loads(json.dumps(returned))
    assert not any(line.startswith("seed 0:") for line in lines)
    assert record["seeds"] == [0, 1] and [run["seed"] for run in record["runs"]] == [0, 1] and record["complete"]

    assert {"benchmark", "timestamp", "command", "machine", "device", "torch_version", "loadavg", "seeds", "setup",
            "runs", "statistics", "wall_seconds", "complete"} <= record.keys()
    setup = record["setup"]
    assert setup["data"] == "synthetic" and setup["epochs"] == 2 and setup["width"] == 2
    assert (setup["lambda1"], setup["lambda2"]) == (1.2, 0.9) and setup["threads"] == 1
    assert setup["train_images"] == sum(setup["class_counts"]) and setup["test_images"] == 100
    assert _finite(record["wall_seconds"]) and record["wall_seconds"] > 0

    for run in record["runs"]:
        assert len(run["lr_per_epoch"]) == 2  # the same schedule in both loops (parity.py checks they are equal)
        for loop in parity.LOOPS:
            result = run[loop]
            assert set(result["metrics"]) == set(parity.METRICS)
            assert all(value is None or 0 <= value <= 100 for value in result["metrics"].values())
            assert _finite(result["wall_seconds"]) and result["wall_seconds"] > 0
            # the loop's own final top-1 is the record's, computed again from the final logits
            assert result["in_loop_final_test_acc"]["plain"] == pytest.approx(result["metrics"]["plain/top1"])
            assert result["in_loop_final_test_acc"]["pn"] == pytest.approx(result["metrics"]["pn/top1"])

    assert set(record["statistics"]) == set(parity.METRICS)
    for metric, stats in record["statistics"].items():
        if metric.endswith("/top1"):
            assert stats["applicable"], metric
        if not stats["applicable"]:
            continue
        assert stats["n"] == 2
        for key in ("reference_mean", "fast_mean", "mean_diff", "sd_diff", "se_diff", "t_quantile", "ci_lower",
                    "ci_upper"):
            assert _finite(stats[key]), (metric, key)
        assert stats["ci_lower"] <= stats["mean_diff"] <= stats["ci_upper"]
        diffs = [run["fast"]["metrics"][metric] - run["reference"]["metrics"][metric] for run in record["runs"]]
        assert stats["mean_diff"] == pytest.approx(sum(diffs) / 2)
    assert any("\nplain/top1 " in line and "95% CI" in line for line in lines)  # the summary table


def test_resume_refuses_a_different_setup(parity, tmp_path):
    out = tmp_path / "parity.json"
    parity.main([*TINY, "--epochs", "1", "--seeds", "0", "--out", str(out)], log=lambda line: None)
    with pytest.raises(SystemExit, match="epochs"):
        parity.main([*TINY, "--seeds", "0-1", "--resume", str(out)], log=lambda line: None)


def _fake_record(parity, seeds, **setup_changes):
    def run(seed):
        metrics = {loop: {m: 50.0 + seed + (0.5 if loop == "fast" else 0.0) for m in parity.METRICS}
                   for loop in parity.LOOPS}
        return {"seed": seed, **{loop: {"metrics": metrics[loop], "seconds_per_epoch": 1.0} for loop in parity.LOOPS}}

    runs = [run(seed) for seed in seeds]
    return {"benchmark": "parity", "timestamp": f"2026-01-0{seeds[0] + 1}T00:00:00+00:00",
            "command": f"python benchmarks/parity.py --seeds {seeds[0]}-{seeds[-1]}", "machine": {"host": "vm"},
            "device": {"type": "cpu", "name": "cpu"}, "torch_version": "2.x", "torchvision_version": "0.x",
            "loadavg": {"start": [1.0], "end": [2.0]}, "seeds": seeds,
            "setup": {"data": "cifar10", "epochs": 10, "warmup_epochs": 2, "threads": 1, "num_workers": 2,
                      "device": "cpu", "imbalance_factor": 100, "train_images": 1000, "test_images": 100,
                      "steps_per_epoch": 16, "batch_size": 64, "width": 8, "lambda1": 1.2, "lambda2": 0.9,
                      "source": {"location": f"/tmp/{seeds[0]}", "member_md5": {"a": "1"}}} | setup_changes,
            "comparison": "fast - reference", "target_se": 1.5, "runs": runs,
            "statistics": parity.all_statistics(runs), "wall_seconds": 100.0 * len(seeds), "complete": True}


def test_merge_combines_parallel_parts_and_refuses_what_does_not_pair(parity, tmp_path):
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "ab.json"
    a.write_text(json.dumps(_fake_record(parity, [0, 1, 2])))
    b.write_text(json.dumps(_fake_record(parity, [3, 4], threads=2)))  # threads and location change timing only
    record = parity.main(["--merge", str(b), str(a), "--out", str(out)], log=lambda line: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert record["seeds"] == [0, 1, 2, 3, 4] and record["complete"]
    assert record["wall_seconds"] == pytest.approx(500.0)
    assert [part["seeds"] for part in record["parts"]] == [[3, 4], [0, 1, 2]]
    stats = record["statistics"]["plain/top1"]
    assert stats["n"] == 5 and stats["mean_diff"] == pytest.approx(0.5) and stats["reference_mean"] == 52.0

    a.write_text(json.dumps(_fake_record(parity, [0, 1, 2], epochs=20)))
    with pytest.raises(SystemExit, match="different setup.*epochs"):
        parity.main(["--merge", str(a), str(b), "--out", str(out)], log=lambda line: None)
    a.write_text(json.dumps(_fake_record(parity, [0, 1, 3])))
    with pytest.raises(SystemExit, match="seed 3 is in both"):
        parity.main(["--merge", str(a), str(b), "--out", str(out)], log=lambda line: None)
    with pytest.raises(SystemExit, match="needs --out"):
        parity.main(["--merge", str(a)], log=lambda line: None)
