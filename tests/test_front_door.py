"""What a newcomer meets first: errors that say what to do (without tracebacks), a run of one's own that keeps
its tables whatever the README holds, and a checkout that the documented commands leave clean."""

import os
import subprocess
import sys

import pytest
import yaml
from project import copy_project, edit_config, env, snakemake

NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "",
              "NO_PROXY": ""}  # a closed local port: a download fails at once, network or not


def terminal(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def last_line(output: str) -> str:
    return [line for line in output.splitlines() if line.strip()][-1].strip()


def test_the_paper_run_without_data_says_what_to_do_last_and_no_traceback(tmp_path):
    workdir = copy_project(tmp_path)
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=workdir, capture_output=True,
                         text=True, timeout=300, env=env(workdir, **NO_NETWORK))
    output = terminal(run)
    assert run.returncode != 0
    message = "could not download CIFAR-100 from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    # once as the job stops, and once more at the very end, under "What went wrong:", where the eye lands
    assert output.count(message) == 2, output
    assert last_line(output).startswith(message) and "What went wrong:" in output, output
    assert "copy the official cifar-100-python.tar.gz (md5 eb9058c3a382ffc7106e4002c42a8d85) into data/" in output
    assert "Traceback" not in output and 'File "' not in output, output
    assert "message: None" not in output
    assert len(output.splitlines()) < 50, output  # the job table, a line a job, the message, the summary
    log = workdir / "results" / "cifar100_lt" / "logs" / "cifar100_dataset.log"
    assert "Traceback" in log.read_text() and "DataError" in log.read_text()  # for whoever needs it
    assert "log: results/cifar100_lt/logs/cifar100_dataset.log" in output
    assert not (workdir / "results" / "cifar100_lt" / "data" / "images.npz").exists()


def test_missing_data_a_truncated_archive_and_a_damaged_intermediate_end_with_their_message(tmp_path):
    """Each of these ends with its one-line message as the last thing printed, naming the file and the fix."""
    workdir = copy_project(tmp_path)
    demo = workdir / "config" / "demo.yaml"
    synthetic = yaml.safe_load(demo.read_text())["dataset"]

    def run_with(dataset, *targets):
        edit_config(demo, lambda c: c.update(dataset=dataset))
        return snakemake(workdir, *targets, "--configfile", "config/demo.yaml")

    missing = run_with({"name": "cifar10", "path": "nowhere/cifar-10-python.tar.gz"})
    assert missing.returncode != 0
    assert "nowhere/cifar-10-python.tar.gz" in last_line(terminal(missing)), terminal(missing)

    truncated = workdir / "cifar-10-python.tar.gz"
    truncated.write_bytes(b"\x1f\x8b\x08\x00" + bytes(1000))  # the start of a gzip file, cut short
    cut = run_with({"name": "cifar10", "path": str(truncated)})
    assert cut.returncode != 0
    assert f"{truncated}: md5" in last_line(terminal(cut)), terminal(cut)

    split = "results/demo/splits/imba100/indices.npy"
    assert run_with(synthetic, split).returncode == 0
    images = workdir / "results" / "demo" / "data" / "images.npz"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])  # a copy cut short
    damaged = snakemake(workdir, split, "--forcerun", "split", "--configfile", "config/demo.yaml")
    output = terminal(damaged)
    assert damaged.returncode != 0
    assert last_line(output).startswith("results/demo/data/images.npz is damaged or incomplete"), output
    assert "remove it and run the same command again" in last_line(output)
    assert "Traceback" not in output and "BadZipFile" not in output.replace("BadZipFile:", ""), output


def test_a_config_error_is_one_line_per_problem_and_no_traceback(tmp_path):
    workdir = copy_project(tmp_path)
    edit_config(workdir / "config" / "demo.yaml", lambda c: (c["recipe"].update(epochs=-1), c.update(colour="red")))
    run = snakemake(workdir, "--configfile", "config/demo.yaml")
    output = terminal(run)
    assert run.returncode != 0
    assert output.count("Error: invalid configuration") == 1
    assert "  - recipe.epochs: -1 is less than the minimum of 1" in output
    assert "  - top level: Additional properties are not allowed ('colour' was unexpected)" in output
    assert "Traceback" not in output and 'File "' not in output, output
    assert len(output.splitlines()) <= 4, output  # the profile's line, the error, one line per problem
    assert not (workdir / "results").exists()


def test_the_seed_command_names_a_missing_config_in_one_line(tmp_path):
    workdir = copy_project(tmp_path)
    run = subprocess.run([sys.executable, "main.py", "--cfg", "config/CIFAR100_LT/BaGMar_imba1000.yaml"],
                         cwd=workdir, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and not run.stdout
    assert run.stderr.splitlines()[-1] == ("main.py: error: --cfg config/CIFAR100_LT/BaGMar_imba1000.yaml: no such "
                                           "file (the seed's experiments are config/CIFAR100_LT/*.yaml)")


def git(workdir, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd=workdir,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A run of one's own (its own run_name, the page its config names untouched) in a git checkout of the project."""
    workdir = copy_project(tmp_path_factory.mktemp("own"))
    edit_config(workdir / "config" / "demo.yaml", lambda c: (  # the demo cut to one training, IF and 2 epochs
        c.update(run_name="mine", imbalance_factors=[100], trainings={"ce": c["trainings"]["ce"]},
                 variants={"ce_pn": c["variants"]["ce_pn"]}, report={**c["report"], "headline_variant": "ce_pn"}),
        c["recipe"].update(epochs=2)))
    git(workdir, "init", "-q")
    git(workdir, "add", "-A")
    git(workdir, "commit", "-qm", "the project")
    readme = (workdir / "docs" / "demo.md").read_text()  # report.readme in config/demo.yaml
    run = snakemake(workdir, "--configfile", "config/demo.yaml")
    assert run.returncode == 0, terminal(run)
    return workdir, run, readme


def test_a_run_of_ones_own_keeps_its_tables_and_says_how_to_add_markers(own_run):
    workdir, run, readme = own_run
    tables = workdir / "results" / "mine" / "tables"
    assert (tables / "results.md").read_text().startswith("### Results: `mine` (synthetic)")
    assert (workdir / "docs" / "demo.md").read_text() == readme
    status = (tables / "readme_status.txt").read_text()
    assert "docs/demo.md has no markers for run 'mine'" in status
    assert "'<!-- BEGIN results: mine -->' and '<!-- END results: mine -->'" in status
    assert terminal(run).count("docs/demo.md has no markers for run 'mine'") == 1  # said on the terminal, once


def test_the_documented_commands_leave_the_checkout_clean(own_run):
    workdir = own_run[0]
    report = snakemake(workdir, "--configfile", "config/demo.yaml", "--report", "report.html")
    assert report.returncode == 0, terminal(report)
    (workdir / "data").mkdir(exist_ok=True)  # where the paper run looks for and downloads CIFAR
    (workdir / "data" / "cifar-100-python.tar.gz.part").write_bytes(b"")
    assert (workdir / "report.html").is_file() and (workdir / "results" / "mine").is_dir()
    assert git(workdir, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_second_checkout_sharing_the_environment_runs_its_own_package(tmp_path):
    """The installed bagmar is this checkout's (pip install -e .); a copy elsewhere, run with no PYTHONPATH of its
    own, plans and its jobs import the copy's package, not the installed one."""
    workdir = copy_project(tmp_path)
    marker = workdir / "imported_by_a_job"
    with open(workdir / "src" / "bagmar" / "__init__.py", "a") as f:
        f.write(f"\nimport sys as _sys\nif '.snakemake/scripts' in _sys.argv[0]:\n    open({str(marker)!r}, 'w').close()\n")
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "results/demo/data/images.npz",
                          "--configfile", "config/demo.yaml"], cwd=workdir, capture_output=True, text=True,
                         timeout=300, env=environ)
    assert run.returncode == 0, terminal(run)
    assert marker.exists(), terminal(run)
