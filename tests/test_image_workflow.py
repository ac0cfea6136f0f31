"""The image-list data sets in the workflow.

The miniature demo (config/miniature.yaml) runs the whole DAG (generated JPEGs and lists, verification, stage 1
and a stage-2 classifier re-training, PN, tables, its section in docs/demo.md); the Places-like one
(config/miniature_places.yaml) a partially frozen stage 1 and stage 2, with tau also chosen on validation; a list with a missing image, an
out-of-range label or a duplicated line stops the verification job, and a truncated JPEG stops training, each with
one line naming the file and line; the ImageNet-LT, Places-LT and iNaturalist 2018 configs dry-run to their plans.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from bagmar.config.run import tau_grid
from bagmar.evaluation.evaluate import Outputs, tau_sweep
from bagmar.evaluation.tables import round_percent
from bagmar.method import backbones
from project import copy_project, edit_config, env, job_counts, planned_jobs, snakemake

CONFIG = "config/miniature.yaml"  # run once per session: tests/conftest.py's miniature_run


def test_the_miniature_demo_runs_the_whole_dag_and_fills_its_page(miniature_run):
    results = miniature_run / "results" / "miniature"
    provenance = json.loads((results / "data" / "provenance.json").read_text())
    assert provenance["lists"].keys() == {"train", "val", "test"} and "every listed image was found" in provenance["note"]
    counts = json.loads((results / "splits" / "imba50" / "class_counts.json").read_text())
    assert (len(counts), max(counts), min(counts)) == (30, 150, 3)  # the config's miniature, IF 50

    table = pd.read_csv(results / "tables" / "results.csv")
    assert sorted(table["variant"]) == sorted(["ce", "ce_pn", "BaGMar", "BaGMar_pn", "BaGMar_crt", "BaGMar_crt_pn"])
    assert set(table["imbalance_factor"]) == {50.0} and table["top1"].between(0, 100).all()
    for variant in ("ce", "BaGMar_crt"):  # the table's cell is the per-model evaluation's final-epoch number
        training = variant
        sweep = pd.read_csv(results / "eval" / training / "imba50" / "seed0" / "tau_sweep.csv")
        plain = sweep[(sweep["variant"] == variant) & (sweep["tau"] == 0)]
        assert table.set_index("variant").loc[variant, "top1"] == round_percent(plain["top1"].iloc[0])
    page = (miniature_run / "docs" / "demo.md").read_text()  # report.readme in config/miniature.yaml
    section = page[page.index("<!-- BEGIN results: miniature -->"):page.index("<!-- END results: miniature -->")]
    headline = table.set_index("variant").loc["BaGMar_pn"]
    assert f"| 50 | {headline.top1:.1f} | {headline.test_best_top1:.1f} (τ={headline.test_best_tau:g}) |" in section
    for stage in ("train", "evaluate"):
        assert len(list((results / "logs" / stage).rglob("*.log"))) == 4
        assert len(list((results / "benchmarks" / stage).rglob("*.tsv"))) == 4
    assert planned_jobs(miniature_run, "--configfile", CONFIG) == {}  # finished: nothing to redo


def test_the_stage2_training_kept_its_stage1_feature_model_bit_for_bit(miniature_run):
    train = miniature_run / "results" / "miniature" / "train"
    stage1 = torch.load(train / "ce" / "imba50" / "seed0" / "model.pt", weights_only=True)
    stage2 = torch.load(train / "BaGMar_crt" / "imba50" / "seed0" / "model.pt", weights_only=True)
    assert stage1.keys() == stage2.keys()
    assert all(torch.equal(stage1[k], stage2[k]) for k in stage1 if not k.startswith("fc."))
    assert not torch.equal(stage1["fc.weight"], stage2["fc.weight"])
    with np.load(train / "BaGMar_crt" / "imba50" / "seed0" / "statistics.npz") as stats:
        assert stats["theta"].shape == (30,) and stats["F"].shape == (30, 30)  # 30 classes: F is kept


PLACES_LIKE = "config/miniature_places.yaml"  # run once per session: tests/conftest.py's miniature_places_run


def test_the_places_like_demo_changes_only_the_last_block_and_fc_in_stage1_then_only_fc(miniature_places_run):
    """Stage 1 starts from the seed's random weights (the stand-in for ImageNet's) and trains layer4.1 (ResNet-18's
    last residual block) and a new fc: every other parameter and statistic is compared with the initialisation.
    Stage 2 then changes fc only."""
    results = miniature_places_run / "results" / "miniature_places"
    train = results / "train"
    torch.manual_seed(0)  # the seed's initialisation, as stage 1 builds it (bagmar.training.image_train.build_network)
    initial = backbones.build("resnet18", 30, width=16).state_dict()
    stage1 = torch.load(train / "ce" / "imba50" / "seed0" / "model.pt", weights_only=True)
    assert stage1.keys() == initial.keys()
    changed = {key for key in initial if not torch.equal(initial[key], stage1[key])}
    last_block = {key for key in initial if key.startswith("layer4.1.")}
    assert changed - last_block == {"fc.weight", "fc.bias"}
    assert {key for key in last_block if key.endswith("weight")} <= changed  # the last block did train
    for training in ("ce_crt", "BaGMar"):
        stage2 = torch.load(train / training / "imba50" / "seed0" / "model.pt", weights_only=True)
        assert {key for key in stage1 if not torch.equal(stage1[key], stage2[key])} == {"fc.weight", "fc.bias"}
    page = (miniature_places_run / "docs" / "demo.md").read_text()
    section = page[page.index("<!-- BEGIN results: miniature_places -->"):
                   page.index("<!-- END results: miniature_places -->")]
    assert "Val-selected τ (top-1)" in section and "Top-1 Accuracy (val-selected τ)" in section
    assert planned_jobs(miniature_places_run, "--configfile", PLACES_LIKE) == {}  # finished: nothing to redo


@pytest.mark.parametrize("run, name", [("miniature_places_run", "miniature_places"), ("miniature_run", "miniature")])
def test_the_miniatures_choose_tau_on_their_validation_list_and_render_it(run, name, request):
    """Validation logits once per training, at the end (the train job's log says so; its cost is in the job's
    benchmark file), and every post-hoc variant's val-selected tau is the validation sweep's best, with the test
    top-1 at that tau, in the tables and the rendered section."""
    workdir = request.getfixturevalue(run)
    results = workdir / "results" / name
    counts = np.asarray(json.loads((results / "splits" / "imba50" / "class_counts.json").read_text()))
    table = pd.read_csv(results / "tables" / "results.csv").set_index("variant")
    config = yaml.safe_load((workdir / "config" / f"{name}.yaml").read_text())
    for variant, spec in config["variants"].items():
        member = results / "train" / spec["training"] / "imba50" / "seed0"
        with np.load(member / "val_logits.npz") as val:
            assert val["logits"].shape == (5 * 30, 30) and np.bincount(val["labels"]).tolist() == [5] * 30
            validation = {key: val[key] for key in val.files}
        log = (results / "logs" / "train" / spec["training"] / "imba50" / "seed0.log").read_text()
        assert log.count("validation logits of the final model, 150 images") == 1
        assert (results / "benchmarks" / "train" / spec["training"] / "imba50" / "seed0.tsv").is_file()
        row = table.loc[variant]
        if spec["evaluation"] == "plain":
            assert np.isnan(row["val_selected_tau"])
            continue
        taus = tau_grid(**config["tau_grid"])
        sweep = tau_sweep(Outputs.from_saved(validation), validation["labels"], counts, taus, spec["evaluation"])
        best = sweep.sort_values(["top1", "tau"], ascending=[False, True])["tau"].iloc[0]
        assert row["val_selected_tau"] == pytest.approx(best)
        test = pd.read_csv(results / "eval" / spec["training"] / "imba50" / "seed0" / "tau_sweep.csv")
        at = test[(test["variant"] == variant) & (test["model"] == "final") & np.isclose(test["tau"], best)]
        assert row["val_selected_top1"] == round_percent(at["top1"].iloc[0])
    page = (workdir / "docs" / "demo.md").read_text()
    section = page[page.index(f"<!-- BEGIN results: {name} -->"):page.index(f"<!-- END results: {name} -->")]
    assert "Val-selected τ (top-1)" in section
    headline = table.loc["BaGMar_pn"]
    assert f"{headline.val_selected_tau:g} ({headline.val_selected_top1:.1f}) |" in section


@pytest.fixture
def broken(miniature_run, tmp_path):
    """A copy of the finished run whose data a test breaks (shutil.copytree keeps the time stamps)."""
    return shutil.copytree(miniature_run, tmp_path / "run", symlinks=True)


def one_error_line(run) -> str:
    assert run.returncode != 0, run.stdout + run.stderr
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, run.stdout + run.stderr
    return lines[0]


@pytest.mark.parametrize("problem, message", [
    ("missing", r"Error: 1 of the 1,\d+ images of .*Mini_LT_train.txt are missing under .* \(first: "
                r".*Mini_LT_train.txt:\d+ train/class_004/00002.jpg\)"),
    ("label", r"Error: .*Mini_LT_train.txt:7: label 30 is outside 0\.\.29 \(train/class_000/00006.jpg\)"),
])  # a duplicated line and the other parse errors: tests/test_image_lists.py, on the same parser
def test_a_broken_list_stops_the_verification_job_with_one_line(broken, problem, message):
    listed = broken / "results" / "miniature" / "data" / "miniature" / "Mini_LT_train.txt"
    lines = listed.read_text().splitlines(keepends=True)
    if problem == "missing":
        (listed.parent / "train" / "class_004" / "00002.jpg").unlink()
    else:
        lines[6] = lines[6].rsplit(" ", 1)[0] + " 30\n"
    listed.write_text("".join(lines))
    # the generator recorded the list's sha256: the list problems are checked before the digest, which names no line
    facts = json.loads((listed.parent / "facts.json").read_text())
    facts["splits"]["train"]["sha256"] = None
    (listed.parent / "facts.json").write_text(json.dumps(facts))
    run = snakemake(broken, "--configfile", CONFIG, "--forcerun", "miniature_lists")
    assert re.match(message, one_error_line(run)), one_error_line(run)


def test_a_truncated_jpeg_stops_training_with_its_list_line_and_path(broken):
    results = broken / "results" / "miniature"
    victim = results / "data" / "miniature" / "train" / "class_001" / "00003.jpg"
    victim.write_bytes(victim.read_bytes()[:200])
    model = results / "train" / "ce" / "imba50" / "seed0" / "model.pt"
    shutil.rmtree(results / "checkpoints" / "train" / "ce" / "imba50" / "seed0")  # else it resumes, reading no image
    run = snakemake(broken, "--configfile", CONFIG, "--forcerun", "train", "--", str(model.relative_to(broken)))
    line = one_error_line(run)
    assert re.fullmatch(r"Error: results/miniature/data/lists/train.txt:\d+: \S+/class_001/00003.jpg cannot be decoded "
                        r"\(200 bytes; .*\); the file is truncated or corrupt: fetch it again", line), line
    number = int(re.search(r"train.txt:(\d+):", line).group(1))
    listed = (results / "data" / "lists" / "train.txt").read_text().splitlines()[number - 1]
    assert listed.startswith("train/class_001/00003.jpg ")


LARGE = {  # config -> (lists rule, trainings, stage-2 trainings and the stage-1 model each reads)
    "imagenet_lt": ("imagenet_lt_lists", 3, {"ce_crt": "train/ce/imba256/seed0/model.pt",
                                             "BaGMar": "train/ce/imba256/seed0/model.pt"}),
    "places_lt": ("places_lt_lists", 3, {"ce_crt": "train/ce/imba996/seed0/model.pt",
                                         "BaGMar": "train/ce/imba996/seed0/model.pt"}),
    "inat2018": ("inat2018_lists", 3, {"ce_crt": "train/ce/imba500/seed0/model.pt",
                                       "BaGMar": "train/ce/imba500/seed0/model.pt"}),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project, and a torch home whose hub cache holds (the name of) torchvision's ResNet-152
    ImageNet weights, which Places-LT's stage 1 starts from: a dry run reads nothing."""
    workdir = copy_project(tmp_path_factory.mktemp("large"))
    checkpoints = workdir / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet152-394f9c45.pth").touch()
    return workdir


def dry_run(project, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-n", "--logger-bagmar-jobs", "full", *args], cwd=project,
                          capture_output=True, text=True, timeout=600,
                          env=env(project, TORCH_HOME=str(project / "torch_home")))


@pytest.mark.parametrize("name", sorted(LARGE))
def test_the_large_benchmarks_configs_dry_run_to_their_plans(project, name):
    lists_rule, trainings, stage2 = LARGE[name]
    config = f"config/{name}.yaml"
    run = dry_run(project, "--configfile", config)
    assert run.returncode == 0, run.stdout + run.stderr
    assert job_counts(run.stdout + run.stderr) == {
        lists_rule: 1, "train": trainings, "evaluate": trainings, "export_model": trainings, "aggregate": 1, "plots": 1,
        "render": 1, "all": 1}
    assert re.findall(r"^rule (\w+):", run.stdout, re.M)[0] == lists_rule  # no data here: the data job comes first
    for training, stage1 in stage2.items():  # a stage-2 job reads the stage-1 model that this run trains
        job = re.search(rf"rule train:\n    input: ([^\n]*)\n    output: [^\n]*train/{training}/", run.stdout)
        assert job and f"results/{name}/{stage1}" in job.group(1), run.stdout
    if name == "places_lt":  # stage 1 reads torchvision's weights from the hub cache, after the lists' job
        job = re.search(r"rule train:\n    input: ([^\n]*)\n    output: [^\n]*train/ce/", run.stdout)
        assert job and "torch_home/hub/checkpoints/resnet152-394f9c45.pth" in job.group(1), run.stdout
        assert "results/places_lt/data/lists/val.txt" in job.group(1)  # the validation list, for its logits


def test_torchvision_weights_as_stage1_are_named_with_their_url_when_missing_or_unknown(project, tmp_path):
    elsewhere = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-n", "--configfile",
                                "config/places_lt.yaml"], cwd=project, capture_output=True, text=True, timeout=600,
                               env=env(project, TORCH_HOME=str(tmp_path)))
    lines = [line for line in elsewhere.stderr.splitlines() if line.startswith("  - ")]
    assert elsewhere.returncode != 0 and len(lines) == 1, elsewhere.stderr  # the one missing input, in one line
    assert lines[0] == (f"  - trainings.ce.stage1 = 'torchvision:ResNet152_Weights.IMAGENET1K_V1': {tmp_path}/hub/"
                        "checkpoints/resnet152-394f9c45.pth is not there; download "
                        "https://download.pytorch.org/models/resnet152-394f9c45.pth to it (online: python -c \"import "
                        "torchvision; torchvision.models.get_weight('ResNet152_Weights.IMAGENET1K_V1')"
                        ".get_state_dict(check_hash=True)\", torchvision's weights API, puts it there and checks its "
                        "checksum)")
    edit_config(project / "config" / "places_lt.yaml",
                lambda c: c["trainings"]["ce"].update(stage1="torchvision:ResNet152_Weights.NOPE"))
    try:
        run = dry_run(project, "--configfile", "config/places_lt.yaml")
    finally:
        shutil.copy(Path(__file__).parents[1] / "config" / "places_lt.yaml", project / "config" / "places_lt.yaml")
    assert run.returncode != 0 and ("trainings.ce: stage1 'torchvision:ResNet152_Weights.NOPE': torchvision has "
                                    "no weights 'ResNet152_Weights.NOPE'") in run.stderr, run.stderr


def test_image_list_runs_refuse_fusion_another_imbalance_factor_missing_stage1_weights_and_unfit_processes(tmp_path):
    workdir = copy_project(tmp_path / "p")
    edit_config(workdir / CONFIG, lambda c: (
        c.update(fusion="trainings", imbalance_factors=[100]),
        c["trainings"]["BaGMar_crt"].update(stage1="training:nope"),
        c["trainings"].update(BaGMar_file={**c["trainings"]["BaGMar_crt"], "stage1": "data/stage1.pth",
                                           "sync_batchnorm": True}),
        c["trainings"]["ce"].update(gpus=3, nodes=2)))
    run = snakemake(workdir, "-n", "--configfile", CONFIG, "--set-resources", "train:gpu_model=a100")
    assert run.returncode != 0
    for expected in ("fusion: trainings: image-list trainings run one network per job; set fusion: none",
                     "imbalance_factors: miniature's split is its training list, whose largest class over its "
                     "smallest is 50; set imbalance_factors: [50]",
                     "trainings.BaGMar_crt.stage1 = 'training:nope' names no other training",
                     "trainings.BaGMar_file.stage1 = 'data/stage1.pth': no such file; give the stage-1 weights' "
                     "path, \"training:<name>\", \"torchvision:<weights>\" or \"random\"",
                     "trainings.ce: batch_size 64 does not divide over 6 processes (gpus: 3 x nodes: 2; the global "
                     "batch is the recipe's, each process takes batch_size / processes)",
                     "trainings.BaGMar_file: sync_batchnorm is for trainings whose BatchNorm trains",
                     "trainings.ce: nodes: 2, but the profile (or --set-resources) sets gpu_model for the train rule"):
        assert expected in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_predict_on_the_miniature_test_list_gives_each_cards_pn_figure(miniature_run, tmp_path):
    """`python -m bagmar predict` reads an image-list model and an image list: its top-1 over the test list at
    tau = 1 is the card's PN figure (the training's own test logits, re-balanced over the same set)."""
    import json
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    results = miniature_run / "results" / "miniature"
    test_list = results / "data" / "lists" / "test.txt"
    labels = np.array([int(line.split()[1]) for line in test_list.read_text().splitlines()])
    for training in ("BaGMar_pn", "BaGMar_crt"):
        model = results / "train" / training / "imba50" / "seed0"
        out = tmp_path / f"{training}.csv"
        run = subprocess.run([sys.executable, "-m", "bagmar", "predict", "--model", str(model), "--images",
                              str(test_list), "--root", str(results / "data" / "miniature"), "--tau", "1",
                              "--output", str(out)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        card = json.loads((model / "model.json").read_text())
        assert card["network"]["kind"] == "torchvision_resnet" and card["input"] == {
            "resize": 46, "crop": 40, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
        top1 = 100.0 * float((pd.read_csv(out)["class_1"].to_numpy() == labels).mean())
        assert top1 == pytest.approx(card["figures"]["pn_tau1"]["top1"], abs=100.0 / len(labels))
    # the miniature has a validation list: a card's tau, predict's default, is PN's val-selected one, the tables'
    card = json.loads((results / "train" / "BaGMar_pn" / "imba50" / "seed0" / "model.json").read_text())
    table = pd.read_csv(results / "tables" / "results.csv").set_index("variant")
    assert card["tau_rule"] == "val_selected" and card["tau"] == card["figures"]["val_selected_tau"]
    assert card["tau"] == pytest.approx(table.loc["BaGMar_pn", "val_selected_tau"])
    assert round_percent(card["figures"]["pn_val_selected"]["top1"]) == table.loc["BaGMar_pn", "val_selected_top1"]
