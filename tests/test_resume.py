"""A killed training resumes and ends bit-identical; damaged or crafted checkpoints are refused."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bagmar.training import checkpoint
from bagmar.data.long_tail import make_synthetic
from bagmar.training.train import Recipe, train

WORKER = Path(__file__).with_name("resume_worker.py")


def run_worker(tmp_path, checkpoints, point=None):
    out = tmp_path / f"result-{point or 'full'}.pt".replace(":", "_")
    run = subprocess.run([sys.executable, str(WORKER), str(checkpoints), str(out), *([point] if point else [])],
                         capture_output=True, text=True, timeout=120)
    return run, out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    run, out = run_worker(tmp, tmp / "checkpoints")
    assert run.returncode == 0, run.stderr
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("point, resumed_after", [
    ("step:2:3", 1),  # mid-epoch
    ("checkpoint:3", 2),  # during the checkpoint write
    ("evaluate:2", 1),  # during the evaluation
])
@pytest.mark.processes
def test_sigkill_then_rerun_is_bit_identical(tmp_path, uninterrupted, point, resumed_after):
    checkpoints = tmp_path / "checkpoints"
    killed, out = run_worker(tmp_path, checkpoints, point)
    assert killed.returncode == -9 and not out.exists()
    resumed, out = run_worker(tmp_path, checkpoints)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming worker after epoch {resumed_after} " in resumed.stdout  # at most one epoch redone
    result = torch.load(out, weights_only=True)
    for name, value in uninterrupted["model"].items():
        assert torch.equal(value, result["model"][name]), name
    assert torch.equal(uninterrupted["logits"], result["logits"])
    assert torch.equal(uninterrupted["theta"], result["theta"])
    assert uninterrupted["metrics"] == result["metrics"]
    assert not list(checkpoints.glob(".*.tmp"))


def tiny(epochs=3):
    images = make_synthetic(4, 20, 5, 8, seed=0)
    recipe = Recipe(epochs=epochs, batch_size=16, width=2, padding=1, cutout_size=4, lambda1=1.0, lambda2=1.0)
    return images, recipe


def run_tiny(checkpoints, epochs=3, **kwargs):
    images, recipe = tiny(epochs)
    return train(images.train_images, images.train_labels, images.test_images, images.test_labels, 4, recipe,
                 checkpoint_dir=checkpoints, progress=lambda line: None, **kwargs)


def test_truncated_checkpoint_is_reported_and_the_previous_one_used(tmp_path):
    full = run_tiny(tmp_path / "a")
    run_tiny(tmp_path / "b", epochs=3)
    newest = tmp_path / "b" / "epoch0003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=str(newest)):
        resumed = run_tiny(tmp_path / "b")
    assert np.array_equal(full.test_logits, resumed.test_logits)
    assert [r["test_acc"] for r in full.metrics] == [r["test_acc"] for r in resumed.metrics]


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    run_tiny(tmp_path, epochs=2)
    images, recipe = tiny()
    other = checkpoint.fingerprint({"lambda1": 0.0}, images.train_images)
    with pytest.warns(UserWarning, match="other settings"):
        assert checkpoint.load_latest(tmp_path, other, "cpu") is None


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    run_tiny(tmp_path, epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch0002.pt", "epoch0003.pt"]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    torch.save({"epoch": 9, "payload": _RunsCode(marker)}, directory / "epoch0009.pt")
    with pytest.warns(UserWarning, match="epoch0009.pt"):
        assert checkpoint.load_latest(directory, "anything", "cpu") is None
    assert not marker.exists()


def test_non_finite_loss_stops_with_epoch_step_and_name(monkeypatch, tmp_path):
    import bagmar.training.engine

    calls, real = [0], bagmar.training.engine.group_loss

    def nan_at_step_8(*args, **kwargs):
        calls[0] += 1
        loss, grad = real(*args, **kwargs)
        return (loss * float("nan"), grad) if calls[0] == 8 else (loss, grad)

    monkeypatch.setattr(bagmar.training.engine, "group_loss", nan_at_step_8)
    with pytest.raises(FloatingPointError, match=r"BaGMar_pn IF 100 seed 0: non-finite loss or logits in epoch 2, step 3 of 5"):
        run_tiny(tmp_path, name="BaGMar_pn IF 100 seed 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch0001.pt"]  # epoch 2 was never checkpointed


@pytest.mark.workflow
def test_killing_the_whole_workflow_and_rerunning_gives_the_same_table(tmp_path):
    import base64
    import os
    import signal
    import time

    import yaml

    from project import copy_project, env, snakemake

    def tiny_project(name):
        workdir = copy_project(tmp_path / name)
        config = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
        config["imbalance_factors"] = [10]  # 3 trainings, one job each: 2 at once on 2 cores, then the third
        config["fusion"] = "none"
        config["trainings"] = {k: config["trainings"][k] for k in ("ce", "BaGMar", "BaGMar_pn")}
        config["variants"] = {k: v for k, v in config["variants"].items() if v["training"] in config["trainings"]}
        config["dataset"]["synthetic"].update(num_classes=10, image_size=8)
        config["recipe"].update(epochs=4, width=2, padding=1, cutout_size=4)
        (workdir / "config" / "demo.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return workdir

    reference = tiny_project("uninterrupted")
    assert snakemake(reference, "--configfile", "config/demo.yaml").returncode == 0

    workdir = tiny_project("killed")
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/demo.yaml"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env=env(workdir))
    results = workdir / "results" / "demo"
    def recorded(path):
        """Snakemake has recorded this output as complete: metadata written, no incomplete marker left."""
        name = base64.urlsafe_b64encode(str(path.relative_to(workdir)).encode()).decode()
        dot = workdir / ".snakemake"
        return (dot / "metadata" / name).is_file() and not (dot / "incomplete" / name).exists()

    def settled_trainings():
        """Trainings that Snakemake has recorded as complete (a fixed delay is not enough under load)."""
        return [p for p in results.glob("train/*/*/*/statistics.npz")
                if all(recorded(p.parent / f) for f in ("model.pt", "test_logits.npz", "metrics.csv", "statistics.npz"))]

    while process.poll() is None:  # kill once one training is done and another part-way (checkpointed)
        partial = [d for d in results.glob("checkpoints/train/*/*/*") if list(d.glob("epoch*.pt"))
                   and not (results / "train" / d.relative_to(results / "checkpoints" / "train") / "model.pt").exists()]
        if partial and settled_trainings():
            break
        time.sleep(0.05)
    assert partial and settled_trainings(), "no moment with one training finished and another part-way"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.parent / "model.pt": (p.parent / "model.pt").stat().st_mtime_ns for p in settled_trainings()}

    assert snakemake(workdir, "--unlock").returncode == 0
    rerun = snakemake(workdir, "--configfile", "config/demo.yaml")
    assert rerun.returncode == 0, rerun.stderr
    logs = "".join(p.read_text() for p in (results / "logs" / "train").rglob("*.log"))
    assert "resuming" in logs
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # only unfinished work was redone
    for name in ("results.csv", "summary.csv", "evaluations.csv"):
        assert (results / "tables" / name).read_bytes() == (reference / "results/demo/tables" / name).read_bytes()
    for model in (reference / "results/demo/train").rglob("model.pt"):
        twin = results / "train" / model.relative_to(reference / "results/demo/train")
        assert twin.read_bytes() == model.read_bytes(), twin


def test_a_checkpoint_from_before_the_cuda_graph_column_resumes_with_the_column_in_its_place(tmp_path):
    """Metrics rows written before the cuda_graph column (same checkpoint format) get it, before the times."""
    import pandas as pd

    from bagmar.training.train import train_group

    images, recipe = tiny()
    data = (images.train_images, images.train_labels, images.test_images, images.test_labels, 4, [recipe])
    train_group(*data, checkpoint_dir=tmp_path, stop_after_epoch=2, progress=lambda line: None)
    newest = tmp_path / "epoch0002.pt"
    state = torch.load(newest, weights_only=True)
    state["metrics"] = [[{k: v for k, v in row.items() if k != "cuda_graph"} for row in rows]
                        for rows in state["metrics"]]
    torch.save(state, newest)
    (result,) = train_group(*data, checkpoint_dir=tmp_path, progress=lambda line: None)
    files = {kind: tmp_path / name for kind, name in
             {"model": "model.pt", "logits": "l.npz", "metrics": "m.csv", "statistics": "s.npz"}.items()}
    result.save(**files, test_labels=images.test_labels)
    metrics = pd.read_csv(files["metrics"])
    assert list(metrics.columns) == ["epoch", "lr", "train_loss", "train_acc", "test_acc", "test_acc_pn", "cuda_graph",
                                     "seconds", "eval_seconds"]
    assert list(metrics["cuda_graph"]) == ["not recorded", "not recorded", "off"]
