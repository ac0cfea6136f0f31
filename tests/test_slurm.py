"""The workflow on a real SLURM cluster through snakemake-executor-plugin-slurm.

A one-node cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd; tests/slurm/) is started on
localhost for this module and stopped after it, and nothing of it may be left running. The demo
runs through profiles/slurm at one imbalance factor, every job via sbatch, and must give the local
demo's models and table rows (tests/conftest.py runs the local demo once per session); its training
job is cancelled with scancel part-way, submitted again by Snakemake, resumes from its checkpoint and
ends byte-identical to the uninterrupted training (one run checks both, which keeps the suite short).

Skipped only where SLURM is not installed and CI is not set; under CI a missing SLURM fails.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from project import copy_project, edit_config, env, job_counts, package_path
from slurm.cluster import ACCOUNT, DEBIAN_PACKAGES, PARTITION, SlurmCluster, missing_binaries

MISSING = missing_binaries()
pytestmark = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"SLURM is not installed (no {', '.join(MISSING)}); .ci/run installs it: "
           f"apt-get install {DEBIAN_PACKAGES}",
)

DEMO = ["--configfile", "config/demo.yaml"]
# Test-only: the first status check 1 s after a submission instead of the plugin's 40 s (the demo's
# jobs take seconds, not hours), and no waiting for a network file system.
FAST = ["--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5"]
TABLES = ["results.csv", "summary.csv", "evaluations.csv", "paper_table.csv", "methods.csv"]
# The demo through SLURM keeps every rule, profile setting and training size, at one of its imbalance factors
# (the smallest split: 12 jobs instead of 33, which keeps the default suite near 10 minutes); the local demo of
# tests/conftest.py is the reference for its files and table rows.
DEMO_IMBALANCE_FACTOR = 200
GROUP = f"imba{DEMO_IMBALANCE_FACTOR}"  # the demo fuses every training of an imbalance factor: cancelled and resumed


@pytest.fixture(scope="module")
def cluster():
    if MISSING:  # only under CI: a missing SLURM is a failure there, not a skip
        pytest.fail(f"SLURM is not installed (no {', '.join(MISSING)}); apt-get install {DEBIAN_PACKAGES}")
    cluster = SlurmCluster(cpus=len(os.sched_getaffinity(0)))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        leftovers = cluster.leftovers()
        if not leftovers:
            cluster.remove()
        # criterion 3: nothing of the cluster (daemons, job steps, jobs) remains running
        assert not leftovers, f"still running after the test cluster stopped: {leftovers} (see {cluster.root})"


def slurm_project(directory: Path) -> Path:
    """A copy of the project whose SLURM profile names the test cluster's partition and account.

    They are set where docs/clusters.md tells users to set theirs: default-resources in profiles/slurm.
    """
    workdir = copy_project(directory)
    use_test_cluster(workdir)
    return workdir


def use_test_cluster(workdir: Path) -> None:
    path = workdir / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account=ACCOUNT)
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


# The miniature's stage-2 training on 2 processes (gpus: 2), retrained through SLURM in a copy of the
# finished local miniature run: one sbatch job asking for 2 GPUs, torchrun's 2 gloo ranks on the CPU inside it.
TWO_RANKS = "results/miniature/train/BaGMar_crt/imba50/seed0"


def start_two_rank_job(cluster, miniature: Path, directory: Path) -> tuple[Path, subprocess.Popen]:
    workdir = Path(shutil.copytree(miniature, directory, symlinks=True))
    use_test_cluster(workdir)
    edit_config(workdir / "config" / "miniature.yaml", lambda c: c["trainings"]["BaGMar_crt"].update(gpus=2))
    shutil.rmtree(workdir / "results" / "miniature" / "checkpoints" / "train" / "BaGMar_crt")  # train, not resume
    log = directory.parent / "two_ranks.log"
    with open(log, "w") as out:
        process = subprocess.Popen(slurm_command("--configfile", "config/miniature.yaml", "--", f"{TWO_RANKS}/model.pt"),
                                   cwd=workdir, env=cluster.env | package_path(workdir), stdout=out,
                                   stderr=subprocess.STDOUT)
    return workdir, process


def start_two_node_job(cluster, miniature: Path, directory: Path) -> tuple[Path, subprocess.Popen]:
    """The miniature's stage-2 training asking for 2 nodes x 2 GPUs, through the SLURM profile; the one-node test
    cluster queues it and never starts it (PartitionNodeLimit); test_a_training_on_two_nodes_... reads the request
    and cancels it."""
    workdir = Path(shutil.copytree(miniature, directory, symlinks=True))
    use_test_cluster(workdir)
    edit_config(workdir / "config" / "miniature.yaml", lambda c: c["trainings"]["BaGMar_crt"].update(gpus=2, nodes=2))
    with open(directory.parent / "two_nodes.log", "w") as out:
        process = subprocess.Popen(slurm_command("--configfile", "config/miniature.yaml", "--retries", "0", "--",
                                                 f"{TWO_RANKS}/model.pt"), cwd=workdir, stdout=out,
                                   stderr=subprocess.STDOUT, env=cluster.env | package_path(workdir))
    return workdir, process


def queued_jobs(cluster, workdir: Path, rule: str) -> list[str]:
    """IDs of the queued or running SLURM jobs of one rule of the Snakemake run in ``workdir``."""
    queued = [line.split("|") for line in cluster.run("squeue", "-h", "-o", "%i|%k|%Z").stdout.splitlines()]
    return [job for job, comment, directory in queued
            if comment.startswith(f"rule_{rule}_") and Path(directory).resolve() == workdir.resolve()]


def slurm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/slurm", *FAST, *args]


def run_uuid(output: str) -> str:
    """The plugin submits every job of one Snakemake run under one job name, its run ID."""
    found = re.findall(r"SLURM run ID: (\S+)", output)
    assert len(found) == 1, output
    return found[0]


def rule_of(comment: str) -> str:
    """The plugin's sbatch --comment is rule_<rule> or rule_<rule>_wildcards_<values>."""
    return re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment).group(1)


class Canceller(threading.Thread):
    """Cancels the run's training job with scancel once it has checkpointed its first epoch (its later epochs
    to come), once; Snakemake (retries >= 1) submits it again and it resumes from that checkpoint.

    The job is told by its working directory as well as its rule: the 2-process training of another run
    may be queued or running at the same moment, also as a rule_train job."""

    def __init__(self, cluster, workdir: Path, checkpoints: Path, process: subprocess.Popen):
        super().__init__(daemon=True)
        self.cluster, self.workdir, self.checkpoints, self.process = cluster, workdir, checkpoints, process
        self.job = self.after_epoch = self.error = None

    def run(self):
        try:
            while not list(self.checkpoints.glob("epoch*.pt")):  # no clock: load only slows it
                if self.process.poll() is not None:
                    raise AssertionError("the SLURM run ended before its training checkpointed")
                time.sleep(0.05)
            (self.job,) = queued_jobs(self.cluster, self.workdir, "train")
            self.cluster.run("scancel", self.job)
            self.after_epoch = max(int(p.stem.removeprefix("epoch")) for p in self.checkpoints.glob("epoch*.pt"))
        except Exception as error:  # reported by the test that reads it
            self.error = error


@pytest.fixture(scope="module")
def demo(cluster, request, tmp_path_factory):
    """The demo through SLURM at DEMO_IMBALANCE_FACTOR, its training cancelled once part-way; and the local
    demo (the README's command) as reference.

    The local demo and the session's other shared runs (tests/conftest.py, which puts this module first) run while
    the SLURM run waits for its jobs, which it mostly does: that saves their wall time.
    """
    workdir = slurm_project(tmp_path_factory.mktemp("slurm"))
    edit_config(workdir / "config" / "demo.yaml", lambda c: c.update(imbalance_factors=[DEMO_IMBALANCE_FACTOR]))
    log = workdir.parent / "snakemake.log"
    with open(log, "w") as out:
        process = subprocess.Popen(slurm_command(*DEMO), cwd=workdir, env=cluster.env | package_path(workdir),
                                   stdout=out, stderr=subprocess.STDOUT)
    canceller = Canceller(cluster, workdir, workdir / "results" / "demo" / "checkpoints" / "train" / GROUP, process)
    canceller.start()
    try:
        # the shared runs, needed later by other modules, while SLURM waits; the miniature first, so that the
        # 2-process SLURM job made from it waits on SLURM while the others run too
        miniature = request.getfixturevalue("miniature_run")
        two_ranks = start_two_rank_job(cluster, miniature, tmp_path_factory.mktemp("two_ranks") / "run")
        two_nodes = start_two_node_job(cluster, miniature, tmp_path_factory.mktemp("two_nodes") / "run")
        request.addfinalizer(lambda: two_nodes[1].poll() is None and (two_nodes[1].kill(), two_nodes[1].wait()))
        local = request.getfixturevalue("demo_run")
        request.getfixturevalue("seeds_run")
        request.getfixturevalue("learning_trainings")  # the local runs are done: into the cores SLURM leaves idle
        process.wait(timeout=900)
        two_ranks[1].wait(timeout=600)
    finally:
        for running in (process, two_ranks[1] if "two_ranks" in locals() else None):
            if running is not None and running.poll() is None:
                running.kill()
                running.wait()
    canceller.join(timeout=60)
    output = log.read_text()
    assert process.returncode == 0, output + "\n" + cluster.logs()
    return workdir, output, local, canceller, two_nodes, two_ranks[0], miniature


def rows_of(path: Path, imbalance_factor: int) -> list[str]:
    """A results table's header and its rows for one imbalance factor, as written."""
    header, *rows = path.read_text().splitlines()
    column = header.split(",").index("imbalance_factor")
    return [header, *(row for row in rows if float(row.split(",")[column]) == imbalance_factor)]


def planned_resources(workdir: Path, *args: str) -> dict[str, dict[str, str]]:
    """Rule -> the resources of its jobs in a dry run (all jobs of a rule alike)."""
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--logger-bagmar-jobs", "full", *args],
                         cwd=workdir, capture_output=True, text=True, timeout=300, env=env(workdir))
    assert run.returncode == 0, run.stdout + run.stderr
    resources = {}
    for rule, line in re.findall(r"\nrule (\w+):\n(?:    .*\n)*?    resources: (.*)", run.stdout):
        resources.setdefault(rule, set()).add(line)
    del resources["all"]  # the target: no action, never submitted
    assert all(len(lines) == 1 for lines in resources.values()), resources
    return {rule: dict(item.split("=", 1) for item in lines.pop().split(", ")) for rule, lines in resources.items()}


def test_slurm_profile_keeps_the_default_profile_and_asks_one_gpu_per_training_job(tmp_path):
    root = Path(__file__).parents[1]
    default = yaml.safe_load((root / "profiles" / "default" / "config.yaml").read_text())
    profile = yaml.safe_load((root / "profiles" / "slurm" / "config.yaml").read_text())
    assert {key: profile.get(key) for key in default} == default  # --workflow-profile replaces profiles/default
    assert profile["executor"] == "slurm" and profile["retries"] >= 1 and profile["jobs"] >= 1

    workdir = copy_project(tmp_path)
    paper = planned_resources(workdir, "--workflow-profile", "profiles/slurm")
    # --profile profiles/slurm loads profiles/default after it, which changes nothing
    assert planned_resources(workdir, "--profile", "profiles/slurm") == paper
    demo = planned_resources(workdir, "--workflow-profile", "profiles/slurm", *DEMO)
    # both fuse the trainings of an imbalance factor; the paper run's LDAM-DRW under its released recipe trains alone
    for plan, alone in ((paper, {"train_alone", "evaluate_alone", "export_model_alone"}), (demo, set())):
        trainings = {"train", "train_alone"} & {"train", *alone}
        assert set(plan) == {"cifar100_dataset" if plan is paper else "synthetic_dataset", "split", "train", *alone,
                             "evaluate", "export_model", "aggregate", "render", "readme", "plots"}
        for rule, resources in plan.items():
            assert resources.get("gpu") == ("1" if rule in trainings else None), (rule, resources)
            assert resources["mem_mb"].isdigit() and resources["runtime"].isdigit(), (rule, resources)


def test_the_cluster_listens_on_localhost_only(cluster):
    listening = cluster.listening_addresses()
    assert listening["slurmctld"] and listening["slurmd"] and listening["slurmdbd"], listening
    for daemon, addresses in listening.items():  # munged and MariaDB: Unix sockets only
        assert all(a.startswith("127.") for a in addresses), (daemon, addresses)


def test_demo_through_slurm_gives_the_local_table(cluster, demo):
    workdir, output, local, canceller, *_ = demo
    planned = job_counts(output)
    planned.pop("all")  # the target rule has no action, so nothing is submitted for it
    planned["train"] += 1  # cancelled once and submitted again (test_a_training_cancelled_...)
    jobs = cluster.sacct("JobIDRaw", "State", "Comment", "Account", "Partition", "AllocTRES", name=run_uuid(output))
    assert Counter(rule_of(job["Comment"]) for job in jobs) == planned  # one sbatch job per Snakemake job
    assert {job["State"] for job in jobs if job["JobIDRaw"] != canceller.job} == {"COMPLETED"}
    assert {(job["Account"], job["Partition"]) for job in jobs} == {(ACCOUNT, PARTITION)}
    for job in jobs:  # one GPU per training, none elsewhere
        assert ("gres/gpu=1" in job["AllocTRES"].split(",")) == (rule_of(job["Comment"]) == "train"), job
    logs = list((workdir / "results" / "slurm_logs").rglob("*.log"))
    assert sorted(p.stem for p in logs) == sorted(job["JobIDRaw"] for job in jobs)

    results, reference = workdir / "results" / "demo", local / "results" / "demo"
    for name in TABLES:  # the local demo's rows for this imbalance factor, byte for byte, and no other rows
        assert (results / "tables" / name).read_text().splitlines() == rows_of(reference / "tables" / name,
                                                                               DEMO_IMBALANCE_FACTOR), name
    row = f"| {DEMO_IMBALANCE_FACTOR} |"  # the rendered table: the same rows
    assert [line for line in (results / "tables" / "results.md").read_text().splitlines() if line.startswith(row)] == \
           [line for line in (reference / "tables" / "results.md").read_text().splitlines() if line.startswith(row)]
    models = sorted(p.relative_to(results) for p in results.glob("train/*/*/*/model.pt"))
    assert len(models) == len(yaml.safe_load((workdir / "config" / "demo.yaml").read_text())["trainings"])
    for model in models:
        assert (results / model).read_bytes() == (reference / model).read_bytes(), model


def test_a_training_cancelled_with_scancel_resumes_and_ends_as_if_uninterrupted(cluster, demo):
    """The run's training job, scancel-ed after its first checkpoint, submitted again by Snakemake, resumed
    from the newest checkpoint, ends with every member's files byte for byte the local demo's."""
    workdir, output, local, canceller, *_ = demo
    assert canceller.error is None, canceller.error
    assert canceller.job is not None, "the training was never cancelled"
    trainings = [job for job in cluster.sacct("JobIDRaw", "State", "Comment", name=run_uuid(output))
                 if rule_of(job["Comment"]) == "train"]
    assert len(trainings) == 2  # Snakemake submitted it again
    assert trainings[0]["JobIDRaw"] == canceller.job and trainings[0]["State"].startswith("CANCELLED")
    assert trainings[1]["State"] == "COMPLETED"
    results = workdir / "results" / "demo"
    epochs = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())["recipe"]["epochs"]
    log = results / "logs" / "train" / f"{GROUP}.log"
    resumed = re.findall(rf"resuming .*BaGMar_pn IF {DEMO_IMBALANCE_FACTOR} seed 0.* after epoch (\d+)", log.read_text())
    assert len(resumed) == 1 and canceller.after_epoch <= int(resumed[0]) < epochs, (canceller.after_epoch, log)

    def without_seconds(path):  # metrics.csv: every column byte for byte but the epochs' wall times
        rows = [line.split(",") for line in path.read_text().splitlines()]
        assert rows[0][-2:] == ["seconds", "eval_seconds"], rows[0]
        return [row[:-2] for row in rows]

    members = sorted(p.parent.relative_to(results) for p in results.glob(f"train/*/{GROUP}/seed0/model.pt"))
    assert len(members) == len(yaml.safe_load((workdir / "config" / "demo.yaml").read_text())["trainings"])
    for member in members:  # the uninterrupted trainings of the local demo
        reference = local / "results" / "demo" / member
        for name in ("model.pt", "test_logits.npz", "statistics.npz"):
            assert (results / member / name).read_bytes() == (reference / name).read_bytes(), (member, name)
        assert without_seconds(results / member / "metrics.csv") == without_seconds(reference / "metrics.csv")


def test_a_two_process_training_runs_as_one_sbatch_job_and_writes_what_one_process_writes(cluster, demo):
    """`gpus: 2` makes the training job ask SLURM for 2 GPUs (sacct), torchrun runs 2 gloo ranks in it (the
    test node's GPUs are placeholders), and rank 0 writes the outputs: a classifier re-training gives the one-process
    local run's weights to float rounding (its BatchNorm is frozen), and its log names both ranks' launch."""
    import torch

    *_, workdir, local = demo
    output = (workdir.parent / "two_ranks.log").read_text()
    jobs = cluster.sacct("JobIDRaw", "State", "Comment", "AllocTRES", name=run_uuid(output))
    assert [(rule_of(job["Comment"]), job["State"]) for job in jobs] == [("train", "COMPLETED")], output
    assert "gres/gpu=2" in jobs[0]["AllocTRES"].split(","), jobs
    log = (workdir / "results" / "miniature" / "logs" / "train" / "BaGMar_crt" / "imba50" / "seed0.log").read_text()
    assert "torch.distributed.run --nproc_per_node=2" in log and "on 2 x cpu" in log, log
    two, one = (torch.load(root / TWO_RANKS / "model.pt", weights_only=True) for root in (workdir, local))
    for key, value in one.items():
        if key.startswith("fc."):
            torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(two[key], value), key  # the frozen feature model


def test_a_training_on_two_nodes_asks_slurm_for_two_nodes_of_one_task_and_the_gpus_of_a_node_each(cluster, demo):
    """`nodes: 2` x `gpus: 2` reaches SLURM as 2 nodes, 2 tasks (one a node, each a torchrun) and gres gpu:2
    a node, not a job total of GPUs (which SLURM may spread unevenly). The one-node test cluster queues it and
    cannot start it (PartitionNodeLimit): what is checked is the request as SLURM holds it."""
    workdir, process = demo[4]
    deadline = time.monotonic() + 120  # submitted while the demo ran: normally queued long since
    while not (jobs := queued_jobs(cluster, workdir, "train")):
        assert process.poll() is None and time.monotonic() < deadline, (workdir.parent / "two_nodes.log").read_text()
        time.sleep(0.2)
    (job,) = jobs
    fields = dict(item.split("=", 1) for item in cluster.run("scontrol", "show", "job", "--oneliner", job).stdout.split()
                  if "=" in item)
    asked = {key: fields.get(key) for key in ("NumNodes", "NumTasks", "CPUs/Task", "TresPerNode", "TresPerJob",
                                              "JobState", "Reason")}
    threads = yaml.safe_load((workdir / "config" / "miniature.yaml").read_text())["threads"]["train"]
    assert asked == {"NumNodes": "2-2", "NumTasks": "2", "CPUs/Task": str(threads), "TresPerNode": "gres:gpu:2",
                     "TresPerJob": None, "JobState": "PENDING", "Reason": "PartitionNodeLimit"}, fields
    process.kill()  # Snakemake would wait for the job forever; after a scancel it takes a minute to give up
    process.wait()
    cluster.run("scancel", job)
    assert f"Job 0 has been submitted with SLURM jobid {job}" in (workdir.parent / "two_nodes.log").read_text()


def test_the_slurm_rendezvous_starts_one_torchrun_a_node_with_srun_inside_the_allocation(cluster, tmp_path):
    """The launch a multi-node job makes (srun, one task a node, torchrun's c10d rendezvous at the
    allocation's first node from scontrol), run for real in an sbatch allocation of the one-node cluster: 2 gloo
    ranks train, rank 0 writes the outputs, and sacct shows the srun step of one task on the node."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_distributed import CLASSES, job

    from bagmar.method import backbones
    from bagmar.data.image_lists import write_miniature
    import torch

    data = tmp_path / "data"
    write_miniature(data, classes=CLASSES, imbalance_factor=10, max_per_class=40, val_per_class=2,
                    test_per_class=6, image_size=32)
    torch.manual_seed(11)
    torch.save(backbones.build("resnet10", CLASSES, width=8).state_dict(), data / "stage1.pt")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job((data, data / "stage1.pt"), tmp_path)))
    # the environment the SLURM jobstep plugin leaves a multi-node (mpi) job: SLURM_JOB_ID, not the node list
    launch = ("import json, os, sys; from bagmar.training.image_job import launch; "
              "[os.environ.pop(k) for k in list(os.environ) if k.startswith('SLURM_') and k != 'SLURM_JOB_ID'];"
              "launch(json.load(open(sys.argv[1])), sys.argv[2], 2, nodes=1, rendezvous='slurm')")
    root = Path(__file__).parents[1]
    submitted = subprocess.run(["sbatch", "--parsable", f"--partition={PARTITION}", f"--account={ACCOUNT}",
                                "--nodes=1", "--ntasks=1", "--cpus-per-task=2", "--gres=gpu:2", "--mem=2000",
                                f"--output={tmp_path / 'slurm.log'}", f"--chdir={tmp_path}", "--wrap",
                                f"{sys.executable} -c \"{launch}\" {job_file} {tmp_path / 'ranks.json'}"],
                               env=cluster.env | package_path(root), capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    deadline = time.monotonic() + 300  # sbatch --wait polls at 2, 4, 8, 16 s: up to 16 s late
    while cluster.run("squeue", "-h", "-j", submitted.stdout.strip()).stdout.strip():
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.2)
    log = (tmp_path / "slurm.log").read_text()
    (state,) = cluster.final_state("State", "ExitCode", name="wrap")
    assert state == {"State": "COMPLETED", "ExitCode": "0:0"}, log
    assert re.search(rf"\$ srun --nodes=1 --ntasks=1 --ntasks-per-node=1 --cpus-per-task=2 --kill-on-bad-exit=1 "
                     rf"\S+ -m torch.distributed.run --nproc_per_node=2 --max_restarts=0 --nnodes=1 "
                     rf"--rdzv_backend=c10d --rdzv_endpoint={cluster.host}:\d+ --rdzv_id={submitted.stdout.strip()} ",
                     log), log
    assert "on 2 x cpu" in log and len(pd.read_csv(tmp_path / "m.csv")) == 2, log
    steps = cluster.run("sacct", "-j", submitted.stdout.strip(), "--parsable2", "--noheader",
                        "--format=JobID,NTasks,State").stdout.split()
    assert [step.split("|", 1)[1] for step in steps if re.fullmatch(r"\d+\.0\|.*", step)] == ["1|COMPLETED"], steps
