"""The configuration layer (bagmar.config): every problem of a config named in one line before any job, and
the Run that the rules ask for groups, recipes, resources and paths."""

import copy
from pathlib import Path

import pytest
import yaml

from bagmar.config import ConfigError, Run, load, problems

ROOT = Path(__file__).parents[1]


def committed(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())


def edited(name: str, edit) -> dict:
    config = committed(name)
    edit(config)
    return config


@pytest.mark.parametrize("name", ["config", "demo", "cifar10_lt", "cifar10_lt_cpu", "miniature", "miniature_places",
                                  "imagenet_lt", "inat2018"])
def test_the_committed_configs_have_no_problem(name):
    assert problems(committed(name)) == []


def test_places_lt_names_its_one_missing_input_torchvisions_weights_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # a torch home without torchvision's ResNet-152 weights
    found = problems(committed("places_lt"))
    assert len(found) == 1 and all(f"{tmp_path}/hub/checkpoints/resnet152-394f9c45.pth is not there; download "
                                   "https://download.pytorch.org/models/resnet152-394f9c45.pth" in line for line in found)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["recipe"].update(epochs=-1), "recipe.epochs: -1 is less than the minimum of 1"),
        (lambda c: c.update(imbalance_factors=[0.5]), "imbalance_factors.0: 0.5 is less than"),
        (lambda c: c.update(colour="red"), "'colour' was unexpected); allowed keys: run_name"),
        (lambda c: c["variants"]["ce_pn"].update(training="nope"), "variants.ce_pn.training = 'nope' is not a key"),
        (lambda c: c.update(tau_grid={"start": 0.0, "stop": 2.0, "step": 0.3}), "must contain tau = 1.0"),
        (lambda c: c.update(tau_grid={"start": 2.0, "stop": 1.0, "step": 0.1}), "tau_grid.stop (1.0) is below"),
        (lambda c: c["trainings"]["BaGMar"].update(lambda1=float("nan")), "trainings.BaGMar.lambda1 = nan"),
        (lambda c: c["recipe"].update(batch_size="64"), "recipe.batch_size: '64' is not of type 'integer'"),
        (lambda c: c["dataset"].update(name="imagenet"), "dataset.name: 'imagenet' is not one of"),
        (lambda c: c["recipe"].update(batch_size=5000), "recipe.batch_size (5000) is larger than the smallest"),
        (lambda c: c["recipe"].update(warmup_epochs=50), "recipe.warmup_epochs (50) exceeds recipe.epochs"),
        (lambda c: c.update(fusion="all"), "fusion: 'all' is not one of ['none', 'trainings', 'trainings_and_seeds']"),
        (lambda c: c["trainings"]["ce"].update(loss="logit_adjusted"),
         "trainings.ce.lambda1 is not a setting of loss logit_adjusted (its settings: tau)"),
        (lambda c: c["trainings"]["ce"].update(loss="focal"),
         "trainings.ce.loss = 'focal' is not one of bagmar, logit_adjusted, ldam_drw, nor a function of your own"),
        (lambda c: (c["trainings"].update(LDAM={"loss": "ldam_drw"}),
                    c["variants"].update(LDAM_tau_norm={"training": "LDAM", "evaluation": "tau_norm"})),
         "variants.LDAM_tau_norm: tau_norm rescales a linear classifier's weights"),
        (lambda c: (c.update(fusion="trainings"), c["trainings"]["ce"].update(epochs=3)),
         "trainings.ce.epochs: fused trainings share every recipe setting but their loss and its settings"),
        (lambda c: c["report"].update(headline_variant="nope"), "report.headline_variant = 'nope' is not a key"),
        (lambda c: c["trainings"]["ce"].update(protocol="end_to_end"),
         "trainings.ce.protocol is a setting of image-list trainings; synthetic trains ResNet-32 under recipe"),
    ],
)
def test_a_cifar_config_problem_is_one_line_naming_the_key(edit, message):
    config = edited("demo", edit)
    found = problems(config)
    assert any(message in line for line in found), found
    assert all("\n" not in line for line in found)
    with pytest.raises(ConfigError) as refused:
        load(config)
    assert message in str(refused.value) and str(refused.value).startswith("invalid configuration")


def test_every_problem_is_listed_at_once():
    config = edited("demo", lambda c: (c["recipe"].update(warmup_epochs=50),
                                       c["variants"]["ce_pn"].update(training="nope")))
    assert len(problems(config)) == 2


def test_an_image_list_config_lists_each_trainings_problems(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stage-1 file is looked up from the working directory, as the workflow runs
    config = edited("miniature", lambda c: (
        c.update(fusion="trainings", imbalance_factors=[100]),
        c["trainings"]["BaGMar_crt"].update(stage1="training:nope"),
        c["trainings"].update(BaGMar_file={**c["trainings"]["BaGMar_crt"], "stage1": "data/stage1.pth",
                                           "sync_batchnorm": True}),
        c["image_list_recipe"].update(resize_size=8),
        c["trainings"].update(ce_e2e={"loss": "bagmar", "stage1": "training:ce"}),
        c["trainings"]["ce"].update(gpus=3, nodes=2),
        c["trainings"]["BaGMar"].update(epochs=1)))
    found = problems(config, train_resources={"gpu_model"})
    for expected in (
            "fusion: trainings: image-list trainings run one network per job; set fusion: none",
            "imbalance_factors: miniature's split is its training list, whose largest class over its smallest is 50; "
            "set imbalance_factors: [50]",
            "trainings.BaGMar_crt.stage1 = 'training:nope' names no other training",
            "trainings.BaGMar_file.stage1 = 'data/stage1.pth': no such file",
            "trainings.ce: batch_size 64 does not divide over 6 processes (gpus: 3 x nodes: 2",
            "trainings.BaGMar_file: sync_batchnorm is for trainings whose BatchNorm trains",
            "trainings.ce: resize_size 8 is smaller than the crop image_size",
            "trainings.ce_e2e: stage1 'training:ce' is given to an end_to_end training",
            "trainings.ce: nodes: 2, but the profile (or --set-resources) sets gpu_model for the train rule",
            "trainings.BaGMar: epochs 1 trains at learning rate 0"):
        assert any(expected in line for line in found), (expected, found)
    assert not any("nodes: 2, but" in line for line in problems(config))  # only a profile's override clashes


def test_trainings_that_start_from_each_other_in_a_circle_are_refused_by_name():
    """stage1 "training:<name>" may name a last-block fine-tuning (Places-LT's stage 1), so two of them could name
    each other; the config check says so for each, before Snakemake meets the cycle."""
    config = edited("miniature_places", lambda c: (
        c["trainings"]["ce"].update(stage1="training:ce2"),
        c["trainings"].update(ce2={**c["trainings"]["ce"], "stage1": "training:ce"})))
    found = [line for line in problems(config) if "in a circle" in line]
    assert [line.split(":")[0] for line in found] == ["trainings.ce.stage1", "trainings.ce2.stage1"]
    assert "(ce -> ce2 -> ce)" in found[0] and "(ce2 -> ce -> ce2)" in found[1]
    assert not [line for line in problems(committed("miniature_places")) if "circle" in line]


def test_load_fills_the_schemas_defaults_in_place():
    config = committed("demo")
    del config["recipe"]["momentum"]
    run = load(config)
    assert config["recipe"]["momentum"] == 0.9 and run.config is config


@pytest.mark.parametrize("name, rules", [("config", ["cifar", "split"]), ("demo", ["synthetic", "split"]),
                                         ("miniature", ["miniature", "image_lists"]), ("inat2018", ["image_lists"])])
def test_each_data_set_family_has_its_own_data_rules(name, rules):
    assert load(committed(name)).data_rules == rules
    for rule_file in rules:
        assert (ROOT / "workflow" / "rules" / f"{rule_file}.smk").is_file()


def test_a_multi_node_training_asks_slurm_for_a_node_each_and_leaves_the_recipe():
    config = committed("miniature")
    config["trainings"]["ce"].update(gpus=2, nodes=4)
    run = load(config)
    group = run.layout.group_of(next(m for m in run.layout.members() if m.training == "ce"))
    assert run.training_resources(group) == {"gpu": 0, "nodes": 4, "gres": "gpu:2", "tasks": 4, "tasks_per_gpu": 0,
                                             "mpi": "srun"}
    (member,) = run.group_members(group)
    assert (member["gpus"], member["nodes"]) == (2, 4) and "gpus" not in member["recipe"]


def test_a_stage2_training_reads_the_stage1_model_of_its_own_seed():
    run = load(committed("miniature"))
    (crt,) = [m for m in run.layout.members() if m.training == "BaGMar_crt"]
    (member,) = run.group_members(run.layout.group_of(crt))
    assert member["recipe"]["stage1"] == run.layout.training_file("model", "ce", crt.imbalance, crt.seed)
    assert run.stage1_inputs(run.layout.group_of(crt)) == [member["recipe"]["stage1"]]


def test_a_cifar_group_trains_every_loss_with_all_of_its_settings():
    run = load(committed("demo"))
    recipes = {m["training"]: m["recipe"] for g in run.layout.groups for m in run.group_members(g)}
    assert recipes["LDAM_DRW"]["loss"] == "ldam_drw" and recipes["LDAM_DRW"]["scale"] == 30.0
    assert "tau" not in recipes["ce"] and recipes["ce"]["lambda1"] == 0.0
    assert isinstance(run, Run) and run.training_resources(next(iter(run.layout.groups))) == {"gpu": 1, "nodes": 1}


def test_problems_never_change_the_config():
    config = committed("demo")
    before = copy.deepcopy(config)
    problems(config)
    assert config == before


def test_a_loss_of_ones_own_is_resolved_before_any_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the module is imported from the working directory, as the workflow runs
    (tmp_path / "own_losses_for_config.py").write_text(
        "import torch.nn.functional as F\n\ndef focal(logits, labels):\n    return F.cross_entropy(logits, labels)\n"
        "\ndef unary(logits):\n    return logits.sum()\n")
    def own(loss):
        return lambda c: c["trainings"].update(ce={"loss": loss})

    config = edited("demo", own("own_losses_for_config:focal"))
    assert problems(config) == []
    run = load(config)
    group = next(g for g, members in run.layout.groups.items() if members[0].training == "ce")
    assert run.loss_files(group) == [tmp_path / "own_losses_for_config.py"]
    assert run.training_recipe("ce", 0) == {**config["recipe"], "loss": "own_losses_for_config:focal", "seed": 0}
    with_lambda = problems(edited("demo", lambda c: c["trainings"].update(
        ce={"loss": "own_losses_for_config:focal", "lambda1": 1.0})))
    assert with_lambda == ["trainings.ce.lambda1 is not a setting of loss own_losses_for_config:focal "
                           "(its settings: none)"]
    for loss, message in [("own_losses_for_config:focall", "module own_losses_for_config"),
                          ("no_such_module_here:focal", "cannot import module no_such_module_here"),
                          ("own_losses_for_config:unary", "must take (logits, labels)")]:
        found = problems(edited("demo", own(loss)))
        assert len(found) == 1 and found[0].startswith(f"trainings.ce.loss '{loss}'") and message in found[0], found


def test_naming_the_shared_recipe_is_the_same_as_naming_none():
    config = committed("demo")  # fused: a training may name the shared recipe and still fuse
    config["trainings"]["ce"]["recipe"] = "shared"
    assert problems(config) == []
