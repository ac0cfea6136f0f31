# Config validation, path helpers and code fingerprints shared by all stages.
import copy
import dataclasses
import importlib.util
import math
import os
import re
import sys
from dataclasses import astuple
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"


def _schema_problems():
    """Every schema violation, one line each, naming the key and what it allows."""
    schema = yaml.safe_load(SCHEMA.read_text())
    problems = []
    for error in jsonschema.Draft202012Validator(schema).iter_errors(config):
        key = ".".join(map(str, error.absolute_path)) or "top level"
        line = f"{key}: {error.message}"
        if error.validator == "additionalProperties" and error.schema.get("properties"):
            line += f"; allowed keys: {', '.join(error.schema['properties'])}"
        problems.append(line)
    return sorted(problems)


def _refuse(problems):
    """Stop before any job: one line per problem and no traceback, since the fix is in the config, not the code."""
    print(
        "Error: invalid configuration (keys and allowed values: workflow/schemas/config.schema.yaml):\n  - "
        + "\n  - ".join(problems),
        file=sys.stderr,
    )
    raise SystemExit(1)


def _fill_defaults(schema, node):
    """The schema's defaults where the config leaves a key out (nested objects too), once it is valid."""
    for key, spec in schema.get("properties", {}).items():
        if key not in node and "default" in spec:
            node[key] = copy.deepcopy(spec["default"])
        if isinstance(node.get(key), dict) and "properties" in spec:
            _fill_defaults(spec, node[key])


if problems := _schema_problems():  # the config is validated once, here
    _refuse(problems)
_fill_defaults(yaml.safe_load(SCHEMA.read_text()), config)

# Relative to the working directory, so that a moved or copied project keeps its recorded inputs.
PACKAGE_SRC = Path(os.path.relpath(Path(workflow.basedir) / "src"))
PACKAGE = PACKAGE_SRC / "bagmar"
TEMPLATES = Path(os.path.relpath(Path(workflow.basedir) / "templates"))
SCRIPTS = Path(workflow.basedir) / "scripts"


def _check_package():
    """The workflow and its jobs (same Python, same environment) must import bagmar from this checkout's src/."""
    found = importlib.util.find_spec("bagmar")
    where = Path(found.origin).resolve().parent if found and found.origin else None
    if where != PACKAGE.resolve():
        print(
            f"Error: the bagmar package that Python finds is {where or 'none'}, not this checkout's "
            f"{PACKAGE.resolve()}; install this checkout (pip install -e .) or run with "
            f"PYTHONPATH={PACKAGE_SRC.resolve()}",
            file=sys.stderr,
        )
        raise SystemExit(1)


_check_package()
from bagmar.data import REAL_DATASETS, long_tailed_counts  # noqa: E402
from bagmar.evaluate import tau_grid  # noqa: E402
from bagmar.fingerprint import code_fingerprint  # noqa: E402
from bagmar.image_lists import (
    DATASETS as LIST_DATASETS,
    miniature_imbalance_factor,
)  # noqa: E402
from bagmar.layout import Layout, Member, imbalance_key  # noqa: E402
from bagmar.recipe import (
    FUSABLE,
    LOSS_SETTINGS,
    Recipe,
    training_defaults,
)  # noqa: E402

TRAINING_DEFAULTS = training_defaults()
POST_HOC = ("pn", "logit_adjustment", "tau_norm")  # evaluations that sweep tau
# what a CIFAR training may set: its Recipe's fields (the schema's training definition lists image-list keys too)
CIFAR_TRAINING_KEYS = {field.name for field in dataclasses.fields(Recipe)}

LAYOUT = Layout(config)  # every path and the group table (src/bagmar/layout.py)
IMBALANCE_FACTORS = LAYOUT.imbalances
SEEDS = LAYOUT.seeds
TAUS = tau_grid(**config["tau_grid"])
FUSION = config["fusion"]
# An image-list data set's split is its training list: one imbalance factor (largest over smallest class),
# the literature's test split, and trainings of torchvision ResNets under image_list_recipe.
IMAGE_LISTS = config["dataset"]["name"] in (*LIST_DATASETS, "miniature")
if config["dataset"]["name"] == "miniature":
    _miniature = config["dataset"]["miniature"]
    NUM_CLASSES = _miniature["classes"]
    LIST_SPLITS, TEST_SPLIT = ("train", "val", "test"), "test"
    LIST_IMBALANCE = miniature_imbalance_factor(
        _miniature["classes"],
        _miniature["max_per_class"],
        _miniature["imbalance_factor"],
    )
    TRAIN_IMAGES = sum(
        long_tailed_counts(
            _miniature["classes"],
            _miniature["max_per_class"],
            _miniature["imbalance_factor"],
        )
    )
elif IMAGE_LISTS:
    _facts = LIST_DATASETS[config["dataset"]["name"]]
    NUM_CLASSES, LIST_SPLITS, TEST_SPLIT = (
        _facts.classes,
        tuple(_facts.splits),
        _facts.test_split,
    )
    LIST_IMBALANCE, TRAIN_IMAGES = (
        _facts.imbalance_factor,
        _facts.splits["train"].images,
    )
elif config["dataset"]["name"] == "synthetic":
    NUM_CLASSES = config["dataset"]["synthetic"]["num_classes"]
    PER_CLASS = config["dataset"]["synthetic"]["train_per_class"]
else:
    NUM_CLASSES, PER_CLASS = REAL_DATASETS[config["dataset"]["name"]]
result = LAYOUT.path
training_file = LAYOUT.training_file


wildcard_constraints:
    imbalance=r"\d+(\.\d+)?",
    seed=r"\d+",
    training=r"[A-Za-z0-9_]+",
    group="|".join(re.escape(name) for name in LAYOUT.groups),


def headline_links():
    """Per imbalance factor, each seed's training log and model of the headline variant (for the tables)."""
    training = config["variants"][config["report"]["headline_variant"]]["training"]
    return {
        float(f): [
            {
                "seed": s,
                "log": LAYOUT.group_log(LAYOUT.group_of(Member(training, f, s))),
                "model": training_file("model", training, f, s),
            }
            for s in SEEDS
        ]
        for f in IMBALANCE_FACTORS
    }


def code(script):
    """Rerun trigger: the fingerprint of what a job runs (bagmar.fingerprint), one short hash per module.

    Handed to Snakemake as a param, so that only a change in the code a job can reach replans it, and
    `snakemake -n` names the module that changed; comments, docstrings and formatting change nothing.
    The profiles leave Snakemake's own `code` trigger off: it compares a script's text, comments included.
    """
    return code_fingerprint(SCRIPTS / script, PACKAGE)


def training_recipe(training, seed):
    """The shared recipe, this training's loss with every setting of that loss (the schema's defaults where
    the config leaves one out, so that a changed default reruns it), its overrides and its seed.
    """
    settings = config["trainings"][training]
    loss = settings.get("loss", TRAINING_DEFAULTS["loss"])
    defaults = {key: TRAINING_DEFAULTS[key] for key in ("loss", *LOSS_SETTINGS[loss])}
    shared = config["image_list_recipe"] if IMAGE_LISTS else config["recipe"]
    return {**shared, **defaults, **settings, "seed": int(seed)}


STAGE1_TRAINING = "training:"  # a stage1 naming another training of the run, not a file


def stage1_model(member):
    """The stage-1 weights file of a member's classifier re-training: another training's model at the same
    imbalance factor and seed, or the file the config names; None for an end-to-end training.
    """
    stage1 = config["trainings"][member["training"]].get("stage1")
    if stage1 is None or not stage1.startswith(STAGE1_TRAINING):
        return stage1
    return training_file(
        "model",
        stage1.removeprefix(STAGE1_TRAINING),
        imbalance_key(member["imbalance_factor"]),
        member["seed"],
    )


def stage1_inputs(wildcards):
    """The stage-1 models that a group's classifier re-trainings read (trained by this run, or given)."""
    found = [stage1_model(member) for member in LAYOUT.group_members(wildcards.group)]
    return [path for path in found if path is not None]


def each_training(kind):
    """(keys, path) of one kind of training file, for every training of the run."""
    return [
        (member.keys(), training_file(kind, *astuple(member)))
        for member in LAYOUT.members()
    ]


def each_evaluation(kind):
    """(keys, path) of one kind of evaluation file, for every training that a variant evaluates, at every
    imbalance factor and seed (each file holds all of that training's variants).
    """
    evaluated = {variant["training"] for variant in config["variants"].values()}
    return [
        (member.keys(), LAYOUT.evaluation_file(kind, *astuple(member)))
        for member in LAYOUT.members()
        if member.training in evaluated
    ]


def group_members(wildcards):
    """What a training job trains: each member's keys, name, recipe and output names (bagmar.layout).

    A job param, so a change to any member's settings reruns the job (and no other).
    """
    members = [
        {**member, "recipe": training_recipe(member["training"], member["seed"])}
        for member in LAYOUT.group_members(wildcards.group)
    ]
    for member in members:
        # gpus and nodes are the job's processes, not the model's recipe: out of the recipe (and so out of the
        # checkpoint's fingerprint, so a rerun on other counts resumes), but still job params (a change reruns it)
        if IMAGE_LISTS:
            member["gpus"] = member["recipe"].pop("gpus")
            member["nodes"] = member["recipe"].pop("nodes")
            if (stage1 := stage1_model(member)) is not None:
                member["recipe"]["stage1"] = stage1
    return members


def group_processes(wildcards):
    """(GPUs a node, nodes) of a training job: its member's gpus and nodes (image-list trainings), else (1, 1)."""
    if not IMAGE_LISTS:
        return 1, 1
    (member,) = group_members(wildcards)
    return member["gpus"], member["nodes"]


def training_resources(wildcards):
    """A training job's resources, as snakemake-executor-plugin-slurm reads them (profiles/slurm).

    One node: gpu, which the plugin passes as sbatch --gpus and a local run counts against --resources gpu=N.
    Several nodes: one task a node and gpu:<gpus> a node as gres (--gpus would be the job's total, spread over
    the nodes as SLURM likes); mpi makes the plugin run the job in the batch step itself, not in an srun step of
    one task, so that its srun can start a torchrun on every node; tasks_per_gpu 0 keeps the plugin from turning
    tasks into --ntasks-per-gpu.
    """
    gpus, nodes = group_processes(wildcards)
    if nodes == 1:
        return {"gpu": gpus, "nodes": 1}
    return {
        "gpu": 0,
        "nodes": nodes,
        "gres": f"gpu:{gpus}",
        "tasks": nodes,
        "tasks_per_gpu": 0,
        "mpi": "srun",
    }


# one callable a resource, as the resources directive takes them; None leaves a resource unset
TRAINING_RESOURCES = {
    name: (lambda wildcards, name=name: training_resources(wildcards).get(name))
    for name in ("gpu", "nodes", "gres", "tasks", "tasks_per_gpu", "mpi")
}


def group_split(wildcards):
    """The long-tailed split that a group's members train on (they share its imbalance factor)."""
    return LAYOUT.split_file("indices.npy", LAYOUT.groups[wildcards.group][0].imbalance)


def evaluation_members(wildcards):
    """What an evaluation job computes: for each evaluated member of its group (keys, name, output names),
    every variant of its training in config order, with its rule and taus (the post-hoc rules, PN, logit
    adjustment and tau-normalisation, sweep the tau grid; plain is tau = 0).

    A job param, so a change to one variant reruns only the evaluations of the groups that hold its training.
    """
    return [
        {
            **member,
            # the columns each of its rows starts with, beside the variant and its rule
            "key_columns": {k: member[k] for k in ("imbalance_factor", "seed")},
            "variants": [
                {
                    "variant": name,
                    "evaluation": variant["evaluation"],
                    "taus": TAUS if variant["evaluation"] in POST_HOC else [0.0],
                }
                for name, variant in config["variants"].items()
                if variant["training"] == member["training"]
            ],
        }
        for member in LAYOUT.evaluation_members(wildcards.group)
    ]


def _check_config():
    """Cross-field rules the schema cannot express; raised before any job is planned."""
    problems = []
    for name, variant in config["variants"].items():
        if variant["training"] not in config["trainings"]:
            problems.append(
                f"variants.{name}.training = '{variant['training']}' is not a key of trainings "
                f"(one of: {', '.join(config['trainings'])})"
            )
    if config["report"]["headline_variant"] not in config["variants"]:
        problems.append(
            f"report.headline_variant = '{config['report']['headline_variant']}' is not a key of variants "
            f"(one of: {', '.join(config['variants'])})"
        )
    for name, by_factor in config["report"].get("published", {}).items():
        if name not in config["variants"]:
            problems.append(
                f"report.published.{name} is not a key of variants (one of: {', '.join(config['variants'])})"
            )
        elif name == config["report"]["headline_variant"] and config["report"].get(
            "paper"
        ):
            problems.append(
                f"report.published.{name}: the headline variant's published figures are report.paper's; "
                "write them there only"
            )
    grid = config["tau_grid"]
    if grid["stop"] < grid["start"]:
        problems.append(
            f"tau_grid.stop ({grid['stop']}) is below tau_grid.start ({grid['start']})"
        )
    elif (
        any(v["evaluation"] in POST_HOC for v in config["variants"].values())
        and 1.0 not in TAUS
    ):
        problems.append(
            f"tau_grid {grid} must contain tau = 1.0, the post-hoc rules' headline column; it gives {TAUS}"
        )
    for name, training in config["trainings"].items():
        loss = training.get("loss", TRAINING_DEFAULTS["loss"])
        for key, value in training.items():
            if isinstance(
                value, str
            ):  # loss, protocol, sampler, stage1: the schema checked them
                continue
            if not math.isfinite(value):
                problems.append(
                    f"trainings.{name}.{key} = {value} is not a finite number"
                )
            elif key in FUSABLE and key not in LOSS_SETTINGS[loss]:
                problems.append(
                    f"trainings.{name}.{key} is not a setting of loss {loss} "
                    f"(its settings: {', '.join(LOSS_SETTINGS[loss])})"
                )
    for name, variant in config["variants"].items():
        training = config["trainings"].get(variant["training"], {})
        if variant["evaluation"] == "tau_norm" and training.get("loss") == "ldam_drw":
            problems.append(
                f"variants.{name}: tau_norm rescales a linear classifier's weights; {variant['training']} "
                "trains LDAM's cosine classifier, whose weights all have the same norm"
            )
    problems += _image_list_problems() if IMAGE_LISTS else _cifar_problems()
    if FUSION != "none":
        for name, training in config["trainings"].items():
            for key in sorted(training.keys() - set(FUSABLE)):
                problems.append(
                    f"trainings.{name}.{key}: fused trainings share every recipe setting but their loss and its "
                    f"settings (fusion: {FUSION}); set recipe.{key} for all, or fusion: none"
                )
    if problems:
        _refuse(problems)


def _cifar_problems():
    """The CIFAR recipe's cross-field rules (CIFAR-10/100 and the synthetic set)."""
    problems = []
    if "image_list_recipe" in config:
        problems.append(
            "image_list_recipe is for the image-list data sets (imagenet_lt, places_lt, inat2018, miniature); "
            f"dataset {config['dataset']['name']} trains under recipe"
        )
    for name, training in config["trainings"].items():
        for key in sorted(training.keys() - CIFAR_TRAINING_KEYS):
            problems.append(
                f"trainings.{name}.{key} is a setting of image-list trainings; {config['dataset']['name']} "
                "trains ResNet-32 under recipe"
            )
    smallest = min(
        sum(long_tailed_counts(NUM_CLASSES, PER_CLASS, f))
        for f in config["imbalance_factors"]
    )
    if config["recipe"]["batch_size"] > smallest:
        problems.append(
            f"recipe.batch_size ({config['recipe']['batch_size']}) is larger than the smallest long-tailed split "
            f"({smallest} images at imbalance factor {max(config['imbalance_factors']):g}); allowed: 1 to {smallest}"
        )
    if config["recipe"]["warmup_epochs"] > config["recipe"]["epochs"]:
        problems.append(
            f"recipe.warmup_epochs ({config['recipe']['warmup_epochs']}) exceeds recipe.epochs ({config['recipe']['epochs']})"
        )
    return problems


# The train rule's resources that the command line or a profile's set-resources replace (Snakemake's own record).
_OVERWRITTEN = getattr(workflow, "resource_settings", None)
PROFILE_TRAIN_RESOURCES = set(
    (getattr(_OVERWRITTEN, "overwrite_resources", None) or {}).get("train", {})
)


def _image_list_problems():
    """An image-list run: one training per job, the list's own imbalance factor, stage-1 weights that exist."""
    problems = []
    name = config["dataset"]["name"]
    if "recipe" in config:
        problems.append(
            f"recipe is the CIFAR recipe; dataset {name} trains under image_list_recipe (bagmar.recipe.ImageListRecipe)"
        )
    if FUSION != "none":
        problems.append(
            f"fusion: {FUSION}: image-list trainings run one network per job; set fusion: none"
        )
    if [float(f) for f in config["imbalance_factors"]] != [LIST_IMBALANCE]:
        problems.append(
            f"imbalance_factors: {name}'s split is its training list, whose largest class over its smallest is "
            f"{LIST_IMBALANCE:g}; set imbalance_factors: [{LIST_IMBALANCE:g}]"
        )
    for training in config["trainings"]:
        recipe = {**training_recipe(training, 0)}
        where = f"trainings.{training}"
        stage1 = recipe.get("stage1")
        if recipe["protocol"] == "classifier_retraining" and stage1 is None:
            problems.append(
                f'{where}: protocol classifier_retraining needs stage1 ("training:<name>" or a weights file)'
            )
        if recipe["protocol"] == "end_to_end" and stage1 is not None:
            problems.append(
                f"{where}.stage1 is set, but the training is end_to_end; set protocol: classifier_retraining"
            )
        if stage1 is not None and stage1.startswith(STAGE1_TRAINING):
            source = stage1.removeprefix(STAGE1_TRAINING)
            if source not in config["trainings"] or source == training:
                problems.append(
                    f"{where}.stage1 = '{stage1}' names no other training (one of: {', '.join(config['trainings'])})"
                )
            elif training_recipe(source, 0)["protocol"] != "end_to_end":
                problems.append(
                    f"{where}.stage1 = '{stage1}' is not an end_to_end training"
                )
        elif stage1 is not None and not Path(stage1).is_file():
            problems.append(
                f"{where}.stage1 = '{stage1}': no such file; give the stage-1 weights' path, or \"training:<name>\""
            )
        if recipe["batch_size"] > TRAIN_IMAGES:
            problems.append(
                f"{where}: batch_size {recipe['batch_size']} is larger than the training list ({TRAIN_IMAGES} images)"
            )
        processes = recipe["gpus"] * recipe["nodes"]
        if recipe["batch_size"] % processes:
            problems.append(
                f"{where}: batch_size {recipe['batch_size']} does not divide over {processes} processes (gpus: "
                f"{recipe['gpus']} x nodes: {recipe['nodes']}; the global batch is the recipe's, each process "
                "takes batch_size / processes)"
            )
        overridden = sorted(
            PROFILE_TRAIN_RESOURCES
            & {"gpu", "gpu_model", "gres", "nodes", "tasks", "mpi"}
        )
        if recipe["nodes"] > 1 and overridden:
            problems.append(
                f"{where}: nodes: {recipe['nodes']}, but the profile (or --set-resources) sets {', '.join(overridden)} for the train rule, "
                "which replaces what a training on several nodes asks SLURM for (--gpus is the job's total; the "
                "training asks for gres gpu:<gpus> a node); select a GPU type with constraint (sbatch -C) instead"
            )
        if recipe["sync_batchnorm"] and recipe["protocol"] != "end_to_end":
            problems.append(
                f"{where}: sync_batchnorm is for end_to_end training; a classifier re-training's BatchNorm is frozen"
            )
        if recipe["resize_size"] < recipe["image_size"]:
            problems.append(
                f"{where}: resize_size {recipe['resize_size']} is smaller than image_size {recipe['image_size']}"
            )
    return problems


_check_config()
