"""One image-list training job, in one process or in N processes under torchrun (issue 16).

The Snakemake job (scripts/train_image_list.py) writes everything the training needs into a JSON job file; with
one process it calls ``run`` itself, with N it starts ``python -m torch.distributed.run`` on
``python -m bagmar.image_job JOB`` (``torchrun_command``) and waits. Every rank trains its share of each global
batch (bagmar.distributed); rank 0 writes the checkpoints and the job's outputs, each atomically.

torchrun is the process manager: a rank that dies ends the job (torchrun stops the others; ``--max-restarts``
from ``restarts``), and every collective has a timeout, so a lost rank is an error naming it, never a hang. A rerun
resumes from the newest checkpoint, on any number of ranks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .distributed import init_world
from .image_lists import read_list
from .image_train import train_image_list
from .io import UserError
from .recipe import ImageListRecipe


class LaunchError(UserError, RuntimeError):
    """A multi-process training that failed, with torchrun's own account of which rank and why."""


def run(job: dict) -> None:
    """Train the job's member (in this process's rank when torchrun started it) and, on rank 0, write its outputs."""
    torch.set_num_threads(job["threads"])
    world = init_world(job["device"], job["timeout_seconds"])
    recipe = ImageListRecipe(**job["recipe"])
    train, test = read_list(job["train"], job["classes"]), read_list(job["test"], job["classes"])
    say = print if world.leader else (lambda line: None)
    say(f"{job['name']}: {recipe}")
    say(f"on {world.size} x {job['device']}, {len(train.images)} training and {len(test.images)} test images under "
        f"{job['root']}, {job['workers']} decoding workers per process")
    result = train_image_list(job["root"], train, test, job["classes"], recipe, device=job["device"],
                              checkpoint_dir=job["checkpoints"], name=job["name"], workers=job["workers"],
                              keep_matrix=job["keep_matrix"], world=world, progress=say)
    if result is not None:
        result.save(**job["outputs"], test_labels=test.labels)
    if world.distributed:
        dist.destroy_process_group()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[01-04]`` -> ``node01``), as ``scontrol show hostnames`` expands it."""
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def torchrun_command(job_file: str | Path, processes: int, restarts: int = 0, environ=os.environ,
                     host_of=first_host) -> list[str]:
    """The torchrun command of a job of ``processes`` ranks per node: ``--standalone`` on one machine; inside a
    SLURM allocation of several nodes, one ``srun`` task per node, each a torchrun that meets the others at the
    first node of the allocation (``scontrol show hostnames``)."""
    entry = ["-m", "bagmar.image_job", str(job_file)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                f"--max_restarts={restarts}"]
    nodes = int(environ.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes == 1:
        return [*torchrun, "--standalone", *entry]
    return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", *torchrun, f"--nnodes={nodes}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={host_of(environ['SLURM_JOB_NODELIST'])}:29500",
            f"--rdzv_id={environ['SLURM_JOB_ID']}", *entry]


def launch(job: dict, job_file: str | Path, processes: int, restarts: int = 0) -> None:
    """Run the job: in this process for one rank, else under torchrun; a failure names the rank that failed."""
    if processes == 1:
        run(job)
        return
    Path(job_file).parent.mkdir(parents=True, exist_ok=True)
    Path(job_file).write_text(json.dumps(job, indent=2))
    command = torchrun_command(job_file, processes, restarts)
    print("$ " + " ".join(command), flush=True)
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        raise LaunchError(f"{command[0]} not found: a multi-node training needs SLURM's srun on the PATH")
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    print(done.stdout, end="", flush=True)
    if done.returncode:
        failed = sorted(set(re.findall(r"rank\s*:\s*(\d+)", done.stdout)), key=int)
        which = f"rank {', '.join(failed)}" if failed else "a rank"
        raise LaunchError(f"{job['name']}: the {processes}-process training failed: {which} exited with an error "
                          f"(torchrun's report above, in the job's log); finished epochs are in {job['checkpoints']}, "
                          "and a rerun resumes from the newest")


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
