"""One image-list training job, in one process or in N processes under torchrun.

The Snakemake job (scripts/train_image_list.py) writes everything the training needs into a JSON job file; with
one process it calls ``run`` itself, with N it starts ``python -m torch.distributed.run`` on
``python -m bagmar.training.image_job JOB`` (``torchrun_command``) and passes its output on to the job's log line by line,
as the ranks print it. Every rank trains its share of each global batch (bagmar.training.distributed); rank 0 writes the
checkpoints and the job's outputs, each atomically.

On several nodes of a SLURM allocation, ``srun`` starts one torchrun a node and they meet at the first node
(c10d rendezvous); the workflow asks SLURM for the nodes (bagmar.config.Run.training_resources).

torchrun is the process manager: a rank that dies ends the job (torchrun stops the others; ``--max-restarts``
from ``restarts``), and every collective has a timeout, so a lost rank is an error naming it, never a hang. A rerun
resumes from the newest checkpoint, on any number of ranks.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .distributed import init_world
from ..data.image_lists import read_list
from .image_train import train_image_list
from ..io import UserError
from ..config.recipe import ImageListRecipe


class LaunchError(UserError, RuntimeError):
    """A multi-process training that failed, with torchrun's own account of which rank and why."""


def run(job: dict) -> None:
    """Train the job's member (in this process's rank when torchrun started it) and, on rank 0, write its outputs."""
    torch.set_num_threads(job["threads"])
    world = init_world(job["device"], job["timeout_seconds"])
    recipe = ImageListRecipe(**job["recipe"])
    train, test = read_list(job["train"], job["classes"]), read_list(job["test"], job["classes"])
    val = read_list(job["val"], job["classes"]) if job.get("val") else None  # a validation split, if it has one
    say = print if world.leader else (lambda line: None)
    say(f"{job['name']}: {recipe}")
    say(f"on {world.size} x {job['device']}, {len(train.images)} training and {len(test.images)} test images"
        f"{f' ({len(val.images)} validation images, once at the end)' if val else ''} under {job['root']}, "
        f"{job['workers']} decoding workers per process")
    result = train_image_list(job["root"], train, test, job["classes"], recipe, device=job["device"],
                              checkpoint_dir=job["checkpoints"], name=job["name"], workers=job["workers"],
                              keep_matrix=job["keep_matrix"], world=world, progress=say, code=job.get("code"),
                              val_list=val)
    if result is not None:
        result.save(**job["outputs"], test_labels=test.labels, **({"val_labels": val.labels} if val else {}))
    if world.distributed:
        dist.destroy_process_group()


@dataclasses.dataclass(frozen=True)
class Allocation:
    """The SLURM allocation a job runs in, as ``scontrol`` reports it: the batch step of a multi-node job sees
    no SLURM_JOB_NODELIST or SLURM_CPUS_PER_TASK (the SLURM executor plugin clears them), only SLURM_JOB_ID."""

    job_id: str
    hosts: tuple[str, ...]
    cpus_per_task: int | None

    @classmethod
    def of_this_job(cls, environ=os.environ) -> "Allocation":
        if "SLURM_JOB_ID" not in environ:
            raise LaunchError("a training on several nodes runs inside a SLURM allocation of that many nodes (no "
                              "SLURM_JOB_ID here): run the workflow with --workflow-profile profiles/slurm")
        job_id = environ["SLURM_JOB_ID"]
        fields = dict(item.split("=", 1) for item in _scontrol("show", "job", "--oneliner", job_id).split()
                      if "=" in item)
        hosts = tuple(_scontrol("show", "hostnames", fields["NodeList"]).split())
        cpus = fields.get("CPUs/Task", "")
        return cls(job_id, hosts, int(cpus) if cpus.isdigit() else None)


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def torchrun_command(job_file: str | Path, processes: int, nodes: int = 1, restarts: int = 0,
                     rendezvous: str | None = None, allocation=Allocation.of_this_job) -> list[str]:
    """The torchrun command of a job of ``processes`` ranks on each of ``nodes`` machines.

    ``rendezvous`` "standalone" (the default on one node): torchrun --standalone, here. "slurm" (the default on
    several): one ``srun`` task a node of the SLURM allocation, each a torchrun that meets the others at the
    allocation's first node (``scontrol show hostnames``), on a free port there when this is that node (where
    SLURM runs the batch step) and one derived from the job ID otherwise; srun is given the job's CPUs a task,
    which it no longer inherits from sbatch, and ends the step when a task fails.
    """
    entry = ["-m", "bagmar.training.image_job", str(job_file)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                f"--max_restarts={restarts}"]
    rendezvous = rendezvous or ("standalone" if nodes == 1 else "slurm")
    if rendezvous == "standalone":
        if nodes != 1:
            raise LaunchError(f"nodes: {nodes} needs the slurm rendezvous; standalone is one machine")
        return [*torchrun, "--standalone", *entry]
    slurm = allocation()
    if len(slurm.hosts) != nodes:
        raise LaunchError(f"the training asks for nodes: {nodes}, but SLURM job {slurm.job_id} has "
                          f"{len(slurm.hosts)} ({', '.join(slurm.hosts)}); the SLURM profile asks for the "
                          "training's nodes, so this job was submitted by other means, or the config changed since")
    host = slurm.hosts[0]
    # SLURM runs the batch step on the first node: a port found free there. Elsewhere one from the job ID, so that
    # two jobs that share a first node do not both take torchrun's default 29500.
    port = _free_port() if host == socket.gethostname().split(".")[0] else 29500 + int(slurm.job_id) % 20000
    cpus = [f"--cpus-per-task={slurm.cpus_per_task}"] if slurm.cpus_per_task else []
    return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", *cpus, "--kill-on-bad-exit=1",
            *torchrun, f"--nnodes={nodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={host}:{port}",
            f"--rdzv_id={slurm.job_id}", *entry]


def launch(job: dict, job_file: str | Path, processes: int, nodes: int = 1, restarts: int = 0,
           rendezvous: str | None = None) -> None:
    """Run the job: in this process for one rank, else under torchrun (``processes`` a node on ``nodes``), whose
    output reaches this process's stdout (the job's log) line by line as it is printed; a failure names the rank
    that failed."""
    if processes * nodes == 1:
        run(job)
        return
    Path(job_file).parent.mkdir(parents=True, exist_ok=True)
    Path(job_file).write_text(json.dumps(job, indent=2))
    command = torchrun_command(job_file, processes, nodes, restarts, rendezvous)
    print("$ " + " ".join(command), flush=True)
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        raise LaunchError(f"{command[0]} not found: a multi-node training needs SLURM's srun on the PATH")
    returncode, tail = _stream(command, {**os.environ, "PYTHONUNBUFFERED": "1"})
    if returncode:
        failed = sorted(set(re.findall(r"\brank\s*:\s*(\d+)", "".join(tail))), key=int)  # not local_rank
        which = f"rank {', '.join(failed)}" if failed else "a rank"
        raise LaunchError(f"{job['name']}: the {processes * nodes}-process training failed: {which} exited with an "
                          f"error (torchrun's report above, in the job's log); finished epochs are in "
                          f"{job['checkpoints']}, and a rerun resumes from the newest")


TAIL_LINES = 10_000  # what is kept of the output to read torchrun's failure report from (it comes last)


def _stream(command: list[str], env: dict[str, str]) -> tuple[int, collections.deque[str]]:
    """Run ``command``, printing its output (stderr with stdout) line by line as it comes, flushed; its exit status
    and its last TAIL_LINES lines. If this process is interrupted, the command is killed, not left running."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                          env=env) as process:
        try:
            for line in process.stdout:
                print(line, end="", flush=True)
                tail.append(line)
        except BaseException:
            process.kill()
            raise
    return process.returncode, tail


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
