"""One image-list model trained by several processes (torchrun, gloo on the CPU), with BaGMar's
statistics kept global (bagmar.training.distributed).

Two ranks give the single process's statistics after every step (float rounding apart), the same on both ranks,
and its weights; without the all-reduce the ranks' theta drift apart; the ranks' batches of a step are together
the single-process batch of that step.
"""

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bagmar.method import backbones
from bagmar.data.image_data import rank_positions
from bagmar.training.distributed import DistributedError, World
from bagmar.training.image_job import Allocation, LaunchError, launch, torchrun_command
from bagmar.data.image_data import epoch_order
from bagmar.data.image_lists import read_list, write_miniature
from bagmar.config.recipe import ImageListRecipe

CLASSES = 10
WORKER = Path(__file__).with_name("ddp_worker.py")


def recipe(stage1: str) -> ImageListRecipe:
    """A classifier re-training with its BatchNorm frozen (no per-rank BatchNorm difference), 2 epochs of 4 steps."""
    return ImageListRecipe("resnet10", epochs=2, batch_size=32, lr=0.1, weight_decay=5e-4, width=8, image_size=24,
                           resize_size=28, lambda1=1.2, lambda2=0.9, seed=3, protocol="classifier_retraining",
                           stage1=stage1, frozen_batchnorm="frozen")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_miniature(root, classes=CLASSES, imbalance_factor=10, max_per_class=40, val_per_class=2,
                    test_per_class=6, image_size=32)
    torch.manual_seed(11)
    stage1 = root / "stage1.pt"
    torch.save(backbones.build("resnet10", CLASSES, width=8).state_dict(), stage1)
    return root, stage1


def torchrun(root, stage1, run_dir: Path, processes: int, *flags: str, check: bool = True):
    """The worker under torchrun; its records (and checkpoints, in run_dir/checkpoints) in run_dir."""
    out = run_dir / "out"
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc_per_node={processes}", str(WORKER), str(root), str(stage1), str(out), *flags],
                         capture_output=True, text=True, timeout=300)
    if not check:
        return run
    assert run.returncode == 0, run.stdout + run.stderr
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(processes)]


@pytest.fixture(scope="module")
def two_ranks_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("reduced")


@pytest.fixture(scope="module")
def two_ranks(setup, two_ranks_dir):
    return torchrun(*setup, two_ranks_dir, 2)


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    """The same training in one process (world of one), recorded the same way."""
    root, stage1 = setup
    sys.path.insert(0, str(WORKER.parent))
    import ddp_worker

    record = {"theta": [], "phi": [], "indices": []}
    from bagmar.training import distributed
    from bagmar.training import engine
    from bagmar.data import image_data
    saved = (engine.StackedStatistics.update, distributed.GlobalStatistics.update, image_data._EpochBatches.__iter__)
    try:
        ddp_worker.record_into(record, no_reduce=False)
        from bagmar.training.image_train import train_image_list
        train = read_list(root / "Mini_LT_train.txt", CLASSES)
        test = read_list(root / "Mini_LT_test.txt", CLASSES)
        result = train_image_list(root, train, test, CLASSES, recipe(str(stage1)), progress=lambda line: None)
    finally:
        engine.StackedStatistics.update, distributed.GlobalStatistics.update, image_data._EpochBatches.__iter__ = saved
    record["model"] = result.model.state_dict()
    return record


def test_two_ranks_keep_the_single_process_statistics_and_weights(setup, single, two_ranks, tmp_path):
    root, stage1 = setup
    ranks = two_ranks
    steps = len(single["theta"])
    assert steps == 8 and all(len(r["theta"]) == steps for r in ranks)
    for step in range(steps):
        for name in ("theta", "phi"):
            assert torch.equal(ranks[0][name][step], ranks[1][name][step]), (name, step)  # the same on both ranks
            # float32 rounding: a rank's network sees 16 images where the single process sees 32, and the CPU's
            # convolutions round a batch of another size differently
            torch.testing.assert_close(ranks[0][name][step], single[name][step], rtol=1e-6, atol=1e-9)
    for step in range(steps):  # data order: the ranks' batches of a step are the single-process batch
        assert ranks[0]["indices"][step] + ranks[1]["indices"][step] == single["indices"][step]
    model = ranks[0]["model"]
    assert not ranks[1]["model"]  # rank 0 alone returns (and the workflow writes) the result
    for key, value in single["model"].items():
        if key.startswith("fc."):  # the classifier trained: gradients averaged over ranks, float rounding apart
            torch.testing.assert_close(model[key], value, rtol=1e-4, atol=1e-5)
        else:  # the frozen feature model
            assert torch.equal(model[key], value), key

    # the test set: each rank tested half, rank 0 gathered the halves in order, as one process tests the whole
    from bagmar.data.image_data import TestImages
    from bagmar.training.image_train import predict
    network = backbones.build("resnet10", CLASSES, width=8)
    network.load_state_dict(model)
    test = read_list(root / "Mini_LT_test.txt", CLASSES)
    whole = predict(network, TestImages(root, test, 24, 28), recipe(str(stage1)), workers=0, device="cpu")
    assert ranks[0]["test_logits"].shape == (len(test.labels), CLASSES)
    assert torch.equal(ranks[0]["test_logits"], whole)  # the shards are whole batches: the same batches

    apart = torchrun(root, stage1, tmp_path / "apart", 2, "--no-reduce")
    drift = [(apart[0]["theta"][s] - apart[1]["theta"][s]).abs().max().item() for s in range(steps)]
    assert drift[0] > 1e-3 and drift[-1] > drift[0]  # each rank counts only its own images: the test can fail


@pytest.mark.slow  # three torchrun runs, 12 s: python -m pytest -m slow tests/test_distributed.py
def test_a_killed_rank_fails_the_job_naming_it_and_a_rerun_resumes_to_the_uninterrupted_weights(setup, two_ranks,
                                                                                                 tmp_path):
    # a hang would end at torchrun()'s subprocess timeout, and fail the test
    killed = torchrun(*setup, tmp_path, 2, "--kill", "1:2:2", check=False)  # rank 1, epoch 2, step 2
    assert killed.returncode != 0
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", killed.stderr), killed.stderr
    resumed = torchrun(*setup, tmp_path, 2)
    assert resumed[0]["resumed_after"] == 1
    for key, value in two_ranks[0]["model"].items():
        assert torch.equal(resumed[0]["model"][key], value), key  # gloo sums in a fixed order: bit for bit
    assert len(resumed[0]["theta"]) == 4  # only epoch 2 was trained again
    assert torch.equal(resumed[0]["theta"][-1], two_ranks[0]["theta"][-1])


def test_a_two_process_checkpoint_resumes_in_one_process(setup, two_ranks, two_ranks_dir, tmp_path):
    """Resume on any number of ranks: the 2-rank run's epoch-1 checkpoint, resumed by one process, ends at the
    2-rank run's weights (float rounding apart: one network sees the whole batch)."""
    from bagmar.training.image_train import train_image_list

    root, stage1 = setup
    checkpoints = Path(shutil.copytree(two_ranks_dir / "checkpoints", tmp_path / "checkpoints"))
    for later in checkpoints.glob("epoch*.pt"):
        if later.name != "epoch0001.pt":
            later.unlink()
    lines = []
    result = train_image_list(root, read_list(root / "Mini_LT_train.txt", CLASSES),
                              read_list(root / "Mini_LT_test.txt", CLASSES), CLASSES, recipe(str(stage1)),
                              progress=lines.append, checkpoint_dir=checkpoints)
    assert any(line.startswith("resuming training after epoch 1 ") for line in lines), lines
    for key, value in two_ranks[0]["model"].items():
        torch.testing.assert_close(result.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_an_end_to_end_trainings_ranks_test_with_the_batchnorm_statistics_rank_0_saves(setup, tmp_path):
    """Each rank's BatchNorm statistics move with its own images in the last step; the test pass uses rank 0's
    on every rank (World.broadcast_buffers), so the gathered logits are the saved model's."""
    from bagmar.data.image_data import TestImages
    from bagmar.training.image_train import predict

    root, stage1 = setup
    ranks = torchrun(root, stage1, tmp_path, 2, "--end-to-end")
    network = backbones.build("resnet10", CLASSES, width=8)
    network.load_state_dict(ranks[0]["model"])
    test = read_list(root / "Mini_LT_test.txt", CLASSES)
    whole = predict(network, TestImages(root, test, 24, 28), recipe(str(stage1)), workers=0, device="cpu")
    assert torch.equal(ranks[0]["test_logits"], whole)


def test_ranks_that_find_different_newest_checkpoints_stop_with_an_error_not_a_hang(setup, two_ranks, two_ranks_dir,
                                                                                      tmp_path):
    """A node that does not see the shared checkpoint directory would resume at another epoch, and the ranks' next
    collectives would pair up wrongly until the timeout; instead every rank stops at once, saying why."""
    shutil.copytree(two_ranks_dir / "checkpoints", tmp_path / "checkpoints",
                    ignore=lambda directory, names: [n for n in names if n.startswith("epoch") and n != "epoch0001.pt"])
    run = torchrun(*setup, tmp_path, 2, "--own-checkpoints", "1", check=False)
    assert run.returncode != 0
    assert "the processes found different newest checkpoints" in run.stderr, run.stderr
    assert "rank 0 resumes at epoch 2" in run.stderr and "rank 1 resumes at epoch 1" in run.stderr, run.stderr


def test_the_ranks_batches_of_a_step_are_the_single_process_batch():
    labels = np.repeat(np.arange(6), [40, 20, 10, 6, 3, 2])
    for sampler in ("instance", "class_aware"):
        order = epoch_order(labels, 6, seed=1, epoch=2, sampler=sampler, samples_per_class=4)
        for step in range(len(labels) // 24):
            for size in (1, 2, 3, 4):
                shares = [order[list(rank_positions(step, 24, World(rank, size)))] for rank in range(size)]
                assert np.array_equal(np.concatenate(shares), order[step * 24:(step + 1) * 24])
    with pytest.raises(DistributedError, match="batch_size 30 does not divide over 4 processes"):
        rank_positions(0, 30, World(1, 4))


def job(setup, tmp_path, root=None) -> dict:
    """What scripts/train_image_list.py hands bagmar.training.image_job: the test's recipe on the miniature."""
    data, stage1 = setup
    return {"name": "t", "recipe": {**vars(recipe(str(stage1)))}, "root": str(root or data), "classes": CLASSES,
            "train": str(data / "Mini_LT_train.txt"), "test": str(data / "Mini_LT_test.txt"),
            "val": str(data / "Mini_LT_val.txt"), "checkpoints": str(tmp_path / "checkpoints"),
            "outputs": {kind: str(tmp_path / name) for kind, name in
                        {"model": "model.pt", "logits": "l.npz", "metrics": "m.csv", "statistics": "s.npz",
                         "val_logits": "v.npz"}.items()},
            "device": "cpu", "workers": 0, "threads": 1, "keep_matrix": True, "timeout_seconds": 60}


@pytest.mark.processes
def test_the_job_launcher_runs_two_processes_under_torchrun_and_rank_0_writes_the_outputs(setup, single, tmp_path,
                                                                                           capsys):
    """Rank 0 writes every output, the validation logits too: each rank infers its shard of the validation list
    once, after the last epoch, and rank 0 gathers them in order (the one-process job's logits, to float rounding:
    the weights differ by the ranks' summation order). float32: the training is the job's own."""
    launch(job(setup, tmp_path), tmp_path / "job.json", processes=2)
    out = capsys.readouterr().out
    assert "torch.distributed.run --nproc_per_node=2 --max_restarts=0 --standalone -m bagmar.training.image_job" in out
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    for key, value in single["model"].items():
        torch.testing.assert_close(model[key], value, rtol=1e-4, atol=1e-5)
    assert len(pd.read_csv(tmp_path / "m.csv")) == 2
    launch(job(setup, tmp_path / "one"), tmp_path / "one" / "job.json", processes=1)
    with np.load(tmp_path / "v.npz") as two, np.load(tmp_path / "one" / "v.npz") as one:
        assert two["logits"].shape == (2 * CLASSES, CLASSES) and np.array_equal(two["labels"], one["labels"])
        torch.testing.assert_close(torch.from_numpy(two["logits"]), torch.from_numpy(one["logits"]), rtol=1e-3,
                                   atol=1e-3)


@pytest.mark.slow  # a torchrun run of two failing ranks, 6 s
def test_a_failing_rank_fails_the_job_with_an_error_naming_it(setup, tmp_path):
    with pytest.raises(LaunchError, match=r"t: the 2-process training failed: rank 0, 1 exited with an error "
                                          r"\(torchrun's report above, in the job's log\); finished epochs are in"):
        launch(job(setup, tmp_path, root=tmp_path / "nowhere"), tmp_path / "job.json", processes=2)


def test_several_nodes_meet_at_the_first_node_of_the_slurm_allocation(monkeypatch):
    """The command of 2 nodes x 4 GPUs (the SLURM allocation as scontrol gives it; tests/test_slurm.py runs this
    rendezvous for real on its one node)."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "login01")  # not the first node: 29500 + job ID % 20000
    allocation = lambda: Allocation("4711", ("gpu07", "gpu08"), 16)  # noqa: E731
    command = torchrun_command("job.json", 4, nodes=2, restarts=1, allocation=allocation)
    assert command[:6] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=16",
                           "--kill-on-bad-exit=1"]
    assert command[6:] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4", "--max_restarts=1",
                           "--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu07:34211", "--rdzv_id=4711",
                           "-m", "bagmar.training.image_job", "job.json"]
    monkeypatch.setattr(socket, "gethostname", lambda: "gpu07.cluster")  # the batch step's node: a free port
    (endpoint,) = [arg for arg in torchrun_command("job.json", 4, nodes=2, allocation=allocation)
                   if arg.startswith("--rdzv_endpoint=")]
    host, port = endpoint.removeprefix("--rdzv_endpoint=").split(":")
    assert host == "gpu07" and 0 < int(port) < 65536
    assert torchrun_command("job.json", 8)[-5:] == ["--max_restarts=0", "--standalone", "-m", "bagmar.training.image_job",
                                                    "job.json"]
    with pytest.raises(LaunchError, match=r"asks for nodes: 3, but SLURM job 4711 has 2 \(gpu07, gpu08\)"):
        torchrun_command("job.json", 4, nodes=3, allocation=allocation)
    with pytest.raises(LaunchError, match="inside a SLURM allocation of that many nodes .* --workflow-profile"):
        Allocation.of_this_job(environ={})


def test_shards_of_the_test_set_are_consecutive_whole_batches_and_cover_it_once():
    for total in (0, 1, 5, 7, 8, 100, 50_000):
        for size in (1, 2, 3, 4, 8):
            for batch in (1, 32, 256):
                shards = [World(rank, size).shard(total, batch) for rank in range(size)]
                assert [i for shard in shards for i in shard] == list(range(total)), (total, size, batch)
                assert all(shard.start % batch == 0 for shard in shards if shard), (total, size, batch)
                assert max(map(len, shards)) < -(-total // size) + batch


def test_sync_batchnorm_is_refused_without_gpus_and_for_a_frozen_backbone(setup):
    from bagmar.training.image_train import synchronised_batchnorm
    from bagmar.config.recipe import RecipeError

    network = backbones.build("resnet10", CLASSES, width=8)
    with pytest.raises(DistributedError, match="sync_batchnorm needs GPUs .* runs on cpu: set sync_batchnorm: false"):
        synchronised_batchnorm(network, "cpu")
    with pytest.raises(RecipeError, match="sync_batchnorm is for trainings whose BatchNorm trains"):
        dataclasses.replace(recipe("stage1.pt"), sync_batchnorm=True)
    dataclasses.replace(recipe("stage1.pt"), sync_batchnorm=True, protocol="last_block_finetuning")  # its last block


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (SyncBatchNorm is CUDA-only)")
def test_sync_batchnorm_keeps_the_parameters_and_state_dict_keys():
    from bagmar.training.image_train import synchronised_batchnorm

    network = backbones.build("resnet10", CLASSES, width=8)
    keys, weight = list(network.state_dict()), network.bn1.weight
    synced = synchronised_batchnorm(network, "cuda")
    assert isinstance(synced.bn1, torch.nn.SyncBatchNorm) and synced.bn1.weight is weight
    assert list(synced.state_dict()) == keys


def stand_in_for_torchrun(monkeypatch, program: str, *args: str) -> None:
    """launch runs ``python -c program args`` where it would run torchrun."""
    from bagmar.training import image_job

    monkeypatch.setattr(image_job, "torchrun_command", lambda *_: [sys.executable, "-c", program, *args])


def test_a_multi_process_jobs_log_gets_each_line_as_it_is_printed(monkeypatch, tmp_path):
    """The job's log is written while the training runs, not when it ends: the stand-in for torchrun prints a
    line, then waits for a file that the test writes only once that line has reached the log."""
    import io
    import threading

    go = tmp_path / "go"
    stand_in_for_torchrun(monkeypatch, "import pathlib, sys, time\n"
                                       "print('epoch 1 of a long training', flush=True)\n"
                                       "deadline = time.monotonic() + 120\n"
                                       "while not pathlib.Path(sys.argv[1]).exists() and time.monotonic() < deadline:\n"
                                       "    time.sleep(0.05)\n"
                                       "print('the end')\n"
                                       "sys.exit(0 if pathlib.Path(sys.argv[1]).exists() else 3)\n", str(go))
    arrived = threading.Event()

    class Log(io.StringIO):
        def write(self, text):
            if "epoch 1 of a long training" in text.splitlines():  # the line itself, not the command that prints it
                arrived.set()
            return super().write(text)

    log, errors = Log(), []
    monkeypatch.setattr(sys, "stdout", log)

    def job():
        try:
            launch({"name": "t", "checkpoints": str(tmp_path / "checkpoints")}, tmp_path / "job.json", processes=2)
        except BaseException as error:  # noqa: BLE001 (reported by the test's thread)
            errors.append(error)

    thread = threading.Thread(target=job)
    thread.start()
    try:
        assert arrived.wait(timeout=100), log.getvalue()  # the stand-in is still waiting for the test
    finally:
        go.touch()
        thread.join(timeout=100)
    assert not thread.is_alive() and not errors, errors
    assert log.getvalue().splitlines()[-2:] == ["epoch 1 of a long training", "the end"]


def test_a_failed_launch_names_the_ranks_of_torchruns_report_which_reaches_the_log(monkeypatch, tmp_path, capsys):
    """torchrun's report, streamed into the log, still names the failed ranks in the error (not their local ranks)."""
    report = ("Failures:\n[1]:\n  rank      : 2 (local_rank: 0)\n  exitcode  : 1\n"
              "Root Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)")
    stand_in_for_torchrun(monkeypatch, f"import sys; print('training'); print({report!r}, file=sys.stderr); "
                                       "sys.exit(1)")
    with pytest.raises(LaunchError, match=r"t: the 4-process training failed: rank 1, 2 exited with an error"):
        launch({"name": "t", "checkpoints": str(tmp_path / "checkpoints")}, tmp_path / "job.json", processes=2,
               nodes=2)
    out = capsys.readouterr().out
    assert "training\n" in out and report in out
