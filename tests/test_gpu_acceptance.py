"""`benchmarks/gpu_acceptance.sh`'s CPU mode runs every stage on tiny sizes and writes a well-formed record.

The GPU run itself happens in sessions lent a GPU machine; here the same script runs with --cpu (generated
CIFAR-10-format data, no ../shared needed). No duration is asserted: only that the figures exist, are finite
and are positive where they are times or counts.
"""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bagmar.training.train import Recipe, learning_rate

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.sh"
STAGES = ["card", "epoch_time", "graph_check", "data", "real_run"]
TRAININGS = {"ce": (0.0, 0.0), "BaGMar": (1.0, 1.0), "BaGMar_pn": (1.2, 0.9)}  # config/cifar10_lt.yaml


def _strict(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} in the record")
    return json.loads(text, parse_constant=refuse)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _accuracy(value, allow_null: bool = False) -> bool:
    if value is None:
        return allow_null
    return isinstance(value, (int, float)) and 0.0 <= value <= 100.0


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_acceptance")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}  # the device tool's variable must not leak in
    env["PYTHON"] = sys.executable
    done = subprocess.run(["bash", str(SCRIPT), "--cpu", "--results-dir", str(tmp / "results"),
                           "--out-copy", str(tmp / "out")], cwd=tmp, env=env, capture_output=True, text=True,
                          check=False)
    return done, tmp


@pytest.fixture(scope="module")
def record(cpu_run):
    done, tmp = cpu_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = (tmp / "results").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}-gpu-acceptance-cpu\.json", path.name)
    return _strict(path.read_text())


def test_the_cpu_mode_passes_every_stage_and_copies_its_record_and_log(cpu_run, record):
    done, tmp = cpu_run
    assert record["benchmark"] == "gpu_acceptance" and record["mode"] == "cpu" and record["status"] == "ok"
    assert list(record["stages"]) == STAGES
    for name, stage in record["stages"].items():
        assert stage["status"] == "ok", (name, stage.get("error"), stage.get("traceback"))
        assert _positive(stage["seconds"]) and isinstance(stage["result"], dict)
    assert _positive(record["wall_seconds"])
    (path,) = (tmp / "results").iterdir()
    out = sorted(p.name for p in (tmp / "out").iterdir())
    assert out == sorted([path.name, "gpu-acceptance.log"])
    assert _strict((tmp / "out" / path.name).read_text()) == record
    assert "gpu acceptance (cpu): OK" in done.stdout and "gpu acceptance (cpu): OK" in (tmp / "out" / "gpu-acceptance.log").read_text()


def test_the_card_names_the_software_and_no_host(record):
    card = record["stages"]["card"]["result"]
    for key in ("python", "torch", "torchvision", "numpy", "cpu_model", "platform"):
        assert isinstance(card[key], str) and card[key], key
    assert card["torch"] == torch.__version__ and card["device"] == "cpu" and card["gpu"] is None
    assert _positive(card["cpu_count"]) and len(card["loadavg"]) == 3
    assert "host" not in json.dumps(record["stages"]["card"]) and "host" not in record["stages"]["epoch_time"]["result"]["record"]["machine"]


def test_the_benchmark_stage_holds_epoch_times_for_one_three_and_nine_models(record):
    result = record["stages"]["epoch_time"]["result"]
    assert result["record"]["benchmark"] == "epoch_time" and "--fused 3 9" in result["command"]
    summary = result["summary"]
    for key in ("reference_epoch_total", "single_epoch_total", "single_train_per_step", "single_eval_per_epoch",
                "ratio_reference_over_single", "steps_per_epoch", "test_images"):
        assert _positive(summary[key]), key
    assert set(summary["fused"]) == {"3", "9"}
    for figures in summary["fused"].values():
        assert all(_positive(v) for v in figures.values()), figures
    check = record["stages"]["graph_check"]["result"]
    assert check["passed"] is True and check["meaningful"] is False  # on a CPU both runs are eager
    assert len(check["relative_weight_difference"]) == 3
    assert all(math.isfinite(d) and d >= 0 for d in check["relative_weight_difference"])


def test_the_real_data_stage_runs_the_first_epochs_of_the_200_epoch_schedule(record):
    data = record["stages"]["data"]["result"]
    assert data["dataset"] == "cifar10" and data["imbalance_factor"] == 100 and len(data["class_counts"]) == 10
    assert data["train_images"] == sum(data["class_counts"]) and _positive(data["test_images"])
    assert data["provenance"]["genuine"] is False and data["spec_counts_checked"] is False
    assert data["provenance"]["load_cifar"]["official_md5_verified"] is False  # read as an unofficial copy

    run = record["stages"]["real_run"]["result"]
    assert run["schedule_epochs"] == 200 and run["recipe"]["epochs"] == 200
    assert 1 <= run["epochs_run"] < 200
    assert run["epochs_run"] == run["plan"]["planned_epochs"] and run["stop_mechanism"] == "train_group(stop_after_epoch=N)"
    assert run["lr_last_epoch"] == pytest.approx(learning_rate(run["epochs_run"], Recipe(epochs=200)))
    assert len(run["epoch_seconds"]) == len(run["curve"]) == run["epochs_run"]
    assert all(_positive(s) for s in run["epoch_seconds"])
    assert _positive(run["seconds_per_epoch"]) and _positive(run["plan"]["estimated_seconds_per_epoch"])
    assert list(run["trainings"]) == list(TRAININGS)
    for name, training in run["trainings"].items():
        assert (training["lambda1"], training["lambda2"]) == TRAININGS[name]
        for evaluation in ("plain", "pn"):
            scores = training[evaluation]
            assert _accuracy(scores["top1"]), (name, evaluation)
            for group in ("many", "medium", "few"):  # null only where no class falls in the group
                assert _accuracy(scores[group], allow_null=True)
            assert len(scores["per_class"]) == 10


@pytest.fixture
def driver():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", ROOT / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    path, modules = list(sys.path), dict(sys.modules)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - set(modules):
            if name in ("gpu_acceptance", "epoch_time"):
                sys.modules.pop(name)


def test_the_real_run_is_planned_from_the_fused_three_speed(driver):
    bench = {"summary": {"test_images": 10000, "fused": {"3": {"train_per_step": 0.005, "eval_per_epoch": 0.2}}},
             "record": {"fused": [{"members": 3, "epoch_seconds": [9.0, 1.0, 1.0], "epoch_total": 1.0}]}}
    plan = driver.plan_epochs(bench, steps=193, test_images=10000, budget=240.0, max_epochs=200)
    assert plan["estimated_seconds_per_epoch"] == pytest.approx(0.005 * 193 + 0.2)
    assert plan["estimated_first_epoch_overhead"] == pytest.approx(8.0)
    assert plan["planned_epochs"] == int((240.0 - 8.0) // (0.005 * 193 + 0.2))
    assert driver.plan_epochs(bench, 193, 10000, 2400.0, 200)["planned_epochs"] == 200  # never past the schedule
    assert driver.plan_epochs(bench, 193, 10000, 1.0, 200)["planned_epochs"] == 1  # at least one epoch
    assert driver.plan_epochs(None, 193, 10000, 240.0, 200)["planned_epochs"] == driver.FALLBACK_EPOCHS  # no speed


@pytest.mark.skipif(torch.cuda.is_available(), reason="without --cpu the driver would run the real GPU stages")
def test_failed_stages_are_recorded_and_the_run_goes_on_and_exits_non_zero(driver, tmp_path):
    """Without a GPU every CUDA stage fails at once; each failure is recorded and the next stage still runs."""
    code = driver.main(["--results-dir", str(tmp_path / "results"), "--data", str(tmp_path / "absent"),
                        "--out-copy", str(tmp_path / "out")])
    assert code == 1
    (path,) = (tmp_path / "results").iterdir()
    record = _strict(path.read_text())
    assert record["status"] == "failed" and record["mode"] == "cuda" and list(record["stages"]) == STAGES
    stages = record["stages"]
    for name in ("card", "epoch_time", "graph_check", "data"):
        assert stages[name]["status"] == "failed" and stages[name]["error"], name
    assert "--prepare" in stages["data"]["error"]  # says how to bring the data
    assert stages["real_run"]["status"] == "skipped" and stages["real_run"]["reason"]
    assert (tmp_path / "out" / path.name).is_file()
