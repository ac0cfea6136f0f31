"""A validated workflow config as a ``Run``, and the rules a valid config must follow (bagmar.config)."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import astuple
from pathlib import Path

import jsonschema

from ..data.long_tail import REAL_DATASETS, long_tailed_counts
from ..data.image_lists import DATASETS as LIST_DATASETS
from ..data.image_lists import miniature_imbalance_factor, no_validation_split
from ..evaluation.evaluate import POST_HOC  # the evaluations that sweep tau
from ..io import UserError
from .layout import RELEASED_FILES, Layout, Member, imbalance_key
from .recipe import (CONFIG_SCHEMA, FUSABLE, LOSS_SETTINGS, SHARED_RECIPE, STAGE1_RANDOM, STAGE1_TORCHVISION,
                     Recipe, RecipeError, image_list_problems, is_user_loss, loss_settings, named_recipe,
                     schedule_problems, schema, torchvision_weights, training_defaults, user_loss, user_loss_file)

STAGE1_TRAINING = "training:"  # a stage1 naming another training of the run, not a file
# What a CIFAR training may set: its Recipe's fields, and a named recipe (the schema's training definition lists
# image-list keys too).
CIFAR_TRAINING_KEYS = frozenset(field.name for field in dataclasses.fields(Recipe)) | {"recipe"}
# Resources of the train rule that a training on several nodes sets itself (Run.training_resources).
MULTI_NODE_RESOURCES = frozenset({"gpu", "gpu_model", "gres", "nodes", "tasks", "mpi"})


class ConfigError(UserError, ValueError):
    """A config with problems; the message lists every one, one line each, and where the keys are described."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"invalid configuration (keys and allowed values: {_shown(CONFIG_SCHEMA)}):\n  - "
                         + "\n  - ".join(problems))


def load(config: dict, train_resources: frozenset[str] | set[str] = frozenset()) -> "Run":
    """Check ``config``, fill the schema's defaults into it (in place: the rules read it too) and return its Run.

    ``train_resources``: the train rule's resources that the command line or a profile sets (they may clash
    with what a training on several nodes asks for). Raises ConfigError naming every problem.
    """
    found = problems(config, train_resources)
    if found:
        raise ConfigError(found)
    _fill_defaults(schema(), config)
    return Run(config)


def problems(config: dict, train_resources: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Every problem of a config, one line each: the schema's first, then (for a config the schema accepts)
    the cross-field rules. An empty list is a config that ``load`` takes."""
    found = _schema_problems(config)
    if found:
        return found
    filled = copy.deepcopy(config)
    _fill_defaults(schema(), filled)
    return _Checks(Run(filled), set(train_resources)).problems()


def tau_grid(start: float, stop: float, step: float) -> list[float]:
    """Inclusive grid, rounded so that 0.1-steps give 1.0 exactly (PN's headline tau)."""
    n = int(round((stop - start) / step))
    return [round(start + i * step, 10) for i in range(n + 1)]


def _shown(path: Path) -> str:
    """A path as a user of this checkout finds it: relative to the working directory where it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _schema_problems(config: dict) -> list[str]:
    """Every schema violation, one line each, naming the key and what it allows."""
    found = []
    for error in jsonschema.Draft202012Validator(schema()).iter_errors(config):
        key = ".".join(map(str, error.absolute_path)) or "top level"
        line = f"{key}: {error.message}"
        if error.validator == "additionalProperties" and error.schema.get("properties"):
            line += f"; allowed keys: {', '.join(error.schema['properties'])}"
        found.append(line)
    return sorted(found)


def _fill_defaults(schema_node: dict, node: dict) -> None:
    """The schema's defaults where the config leaves a key out (nested objects too), once it is valid."""
    for key, spec in schema_node.get("properties", {}).items():
        if key not in node and "default" in spec:
            node[key] = copy.deepcopy(spec["default"])
        if isinstance(node.get(key), dict) and "properties" in spec:
            _fill_defaults(spec, node[key])


class Run:
    """One valid, default-filled config: its data set's facts, trainings, groups, paths and job parameters."""

    def __init__(self, config: dict):
        self.config = config
        self.layout = Layout(config)  # every path and the group table
        self.imbalance_factors, self.seeds = self.layout.imbalances, self.layout.seeds
        self.taus = tau_grid(**config["tau_grid"])
        self.fusion = config["fusion"]
        self.dataset = config["dataset"]["name"]
        # An image-list data set's split is its training list: one imbalance factor (largest over smallest class),
        # the literature's test split, and trainings of torchvision ResNets under image_list_recipe.
        self.image_lists = self.dataset in (*LIST_DATASETS, "miniature")
        self.per_class = self.list_imbalance = self.train_images = None
        self.list_splits: tuple[str, ...] = ()
        self.test_split = None
        self.validation_split = self.layout.validation_split  # where choices are made, apart from the test list
        self.no_validation = no_validation_split(self.dataset)  # or why there is none, as the tables say it
        if self.dataset == "miniature":
            miniature = config["dataset"]["miniature"]
            shape = miniature["classes"], miniature["max_per_class"], miniature["imbalance_factor"]
            self.num_classes = miniature["classes"]
            self.list_splits, self.test_split = ("train", "val", "test"), "test"
            self.list_imbalance = miniature_imbalance_factor(*shape)
            self.train_images = sum(long_tailed_counts(*shape))
        elif self.image_lists:
            facts = LIST_DATASETS[self.dataset]
            self.num_classes, self.list_splits, self.test_split = facts.classes, tuple(facts.splits), facts.test_split
            self.list_imbalance, self.train_images = facts.imbalance_factor, facts.splits["train"].images
        elif self.dataset == "synthetic":
            self.num_classes = config["dataset"]["synthetic"]["num_classes"]
            self.per_class = config["dataset"]["synthetic"]["train_per_class"]
        else:
            self.num_classes, self.per_class = REAL_DATASETS[self.dataset]
        self.keep_matrix = self.num_classes <= config["statistics_matrix_max_classes"]
        # the side of the images a CIFAR-recipe network takes (the synthetic set's own; unused by image lists, whose
        # input is their recipe's resize and crop)
        self.image_size = (config["dataset"]["synthetic"]["image_size"] if self.dataset == "synthetic" else 32)

    @property
    def data_rules(self) -> list[str]:
        """The rule files (workflow/rules/<name>.smk) that make this run's data and splits."""
        if self.dataset == "miniature":
            return ["miniature", "image_lists"]
        if self.image_lists:
            return ["image_lists"]
        return ["synthetic" if self.dataset == "synthetic" else "cifar", "split"]

    # ---------------------------------------------------------------- trainings

    def training_recipe(self, training: str, seed: int | str) -> dict:
        """The shared recipe, this training's loss with every setting of that loss (the schema's defaults where
        the config leaves one out, so that a changed default reruns it), its overrides and its seed."""
        defaults = training_defaults()
        settings = self.config["trainings"][training]
        loss = settings.get("loss", defaults["loss"])
        own = {key: defaults[key] for key in ("loss", *loss_settings(loss))}
        if self.image_lists:
            settings = {key: value for key, value in settings.items() if key != "recipe"}  # "shared": the only one
            return {**self.config["image_list_recipe"], **own, **settings, "seed": int(seed)}
        named = named_recipe(settings.get("recipe"))  # a named recipe's settings over the run's
        settings = {key: value for key, value in settings.items() if key != "recipe"}
        return {**self.config["recipe"], **named, **own, **settings, "seed": int(seed)}

    def recipe_names(self) -> dict[str, str]:
        """Each training's recipe: the run's shared one, or the named one it selects (the methods table's)."""
        return {name: training.get("recipe", SHARED_RECIPE) for name, training in self.config["trainings"].items()}

    def losses(self) -> dict[str, str]:
        """Each training's loss ("released" for the authors' checkpoints, imported rather than trained)."""
        return {name: "released" if name in self.layout.released else self.training_recipe(name, 0)["loss"]
                for name in self.config["trainings"]}

    def released_inputs(self, group: str) -> dict[str, str]:
        """What importing a released checkpoint (a group of one) reads: the file, and the data set it is tested on."""
        (member,) = self.layout.groups[group]
        return {"checkpoint": self.released_checkpoint(member.training, member.imbalance)["path"],
                "images": self.layout.path("data", "images.npz")}

    def released_checkpoint(self, training: str, imbalance: str) -> dict:
        """{path, url} of a released training's checkpoint at one imbalance factor."""
        by_factor = {imbalance_key(f): entry for f, entry in self.config["trainings"][training]["released"].items()}
        return by_factor[imbalance_key(imbalance)]

    def loss_files(self, group: str) -> list[Path]:
        """The source files of the users' own losses that a group's members train with (fingerprinted for reruns)."""
        losses = {self.training_recipe(member.training, 0)["loss"] for member in self.layout.groups[group]}
        return sorted(user_loss_file(loss) for loss in losses if is_user_loss(loss))

    def stage1_model(self, training: str, imbalance: float | str, seed: int | str) -> str | None:
        """The weights file a classifier re-training or a last-block fine-tuning starts from: another training's
        model at the same imbalance factor and seed, torchvision's file in torch's hub cache, or the file the config
        names; "random" as it is (no file); None for an end-to-end training."""
        stage1 = self.config["trainings"][training].get("stage1")
        if stage1 is not None and stage1.startswith(STAGE1_TORCHVISION):
            return str(torchvision_weights(stage1)[0])
        if stage1 is None or not stage1.startswith(STAGE1_TRAINING):
            return stage1
        return self.layout.training_file("model", stage1.removeprefix(STAGE1_TRAINING), imbalance_key(imbalance),
                                         seed)

    def stage1_inputs(self, group: str) -> list[str]:
        """The weights files that a group's classifier re-trainings and last-block fine-tunings start from (trained
        by this run, or given; "random" is none)."""
        found = [self.stage1_model(*astuple(member)) for member in self.layout.groups[group]]
        return [path for path in found if path not in (None, STAGE1_RANDOM)]

    def group_members(self, group: str) -> list[dict]:
        """What a training job trains: each member's keys, name, recipe and output names (bagmar.config.layout).

        A job param, so a change to any member's settings reruns the job (and no other). gpus and nodes are the
        job's processes, not the model's recipe: out of the recipe (and so out of the checkpoint's fingerprint,
        so that a rerun on other counts resumes), but still job params (a change reruns it).
        """
        return [{**member, **self.model_recipe(member["training"], member["imbalance_factor"], member["seed"])}
                for member in self.layout.group_members(group)]

    def model_recipe(self, training: str, imbalance: float | str, seed: int | str) -> dict:
        """{"recipe": what one model trains under} and, for an image-list training, its job's "gpus" and "nodes",
        taken out of the recipe; a stage-2 setting leaves an end-to-end recipe, and a classifier re-training's
        stage1 is the weights file it reads."""
        recipe = self.training_recipe(training, seed)
        if not self.image_lists:
            return {"recipe": recipe}
        processes = {"gpus": recipe.pop("gpus"), "nodes": recipe.pop("nodes")}
        if recipe["protocol"] == "end_to_end":  # a setting of frozen layers: not a rerun trigger of one without
            recipe.pop("frozen_batchnorm")
        stage1 = self.stage1_model(training, imbalance, seed)
        if stage1 is not None:
            recipe["stage1"] = stage1
        return {"recipe": recipe, **processes}

    def training_resources(self, group: str) -> dict:
        """A training job's resources, as snakemake-executor-plugin-slurm reads them (profiles/slurm).

        One node: gpu, which the plugin passes as sbatch --gpus and a local run counts against --resources gpu=N.
        Several nodes: one task a node and gpu:<gpus> a node as gres (--gpus would be the job's total, spread over
        the nodes as SLURM likes); mpi makes the plugin run the job in the batch step itself, not in an srun step
        of one task, so that its srun can start a torchrun on every node; tasks_per_gpu 0 keeps the plugin from
        turning tasks into --ntasks-per-gpu.
        """
        if not self.image_lists:
            return {"gpu": 1, "nodes": 1}
        (member,) = self.group_members(group)
        gpus, nodes = member["gpus"], member["nodes"]
        if nodes == 1:
            return {"gpu": gpus, "nodes": 1}
        return {"gpu": 0, "nodes": nodes, "gres": f"gpu:{gpus}", "tasks": nodes, "tasks_per_gpu": 0, "mpi": "srun"}

    def group_split(self, group: str) -> str:
        """The long-tailed split that a group's members train on (they share its imbalance factor)."""
        return self.layout.split_file("indices.npy", self.layout.groups[group][0].imbalance)

    # ---------------------------------------------------------------- evaluations and reports

    def evaluation_inputs(self, group: str) -> dict[str, list[str] | str]:
        """An evaluation job's inputs: its evaluated members' saved test outputs (and, where the data set has a
        validation split, their validation logits), and their split's class counts."""
        members = self.layout.evaluated_members(group)
        inputs = {"logits": [self.layout.training_file("logits", *astuple(member)) for member in members],
                  "counts": self.layout.split_file("class_counts.json", self.layout.groups[group][0].imbalance)}
        if self.validation_split:
            inputs["val_logits"] = [self.layout.training_file("val_logits", *astuple(member)) for member in members]
        return inputs

    def evaluation_members(self, group: str) -> list[dict]:
        """What an evaluation job computes: for each evaluated member of its group (keys, name, output names),
        every variant of its training in config order, with its rule and taus (the post-hoc rules sweep the tau
        grid; plain is tau = 0). A job param, so a change to one variant reruns only the evaluations of the
        groups that hold its training."""
        return [
            {
                **member,
                "key_columns": {k: member[k] for k in ("imbalance_factor", "seed")},
                "variants": [
                    {"variant": name, "evaluation": variant["evaluation"],
                     "taus": self.taus if variant["evaluation"] in POST_HOC else [0.0],
                     **({"tau_norm_bias": self.config["tau_norm_bias"]} if variant["evaluation"] == "tau_norm" else {})}
                    for name, variant in self.config["variants"].items()
                    if variant["training"] == member["training"]
                ],
            }
            for member in self.layout.evaluation_members(group)
        ]

    # ---------------------------------------------------------------- models to hand out

    def model_inputs(self, group: str) -> dict[str, list[str] | str]:
        """What an export job reads: its members' models and test outputs (and validation logits, where the data
        set has a validation list), and the split they trained on (the class counts, and the file whose sha256
        names the split: the indices, or the training list)."""
        members = self.layout.groups[group]
        imbalance = members[0].imbalance
        split = (self.layout.path("data", "lists", "train.txt") if self.image_lists
                 else self.layout.split_file("indices.npy", imbalance))
        inputs = {"models": [self.layout.training_file("model", *astuple(m)) for m in members],
                  "logits": [self.layout.training_file("logits", *astuple(m)) for m in members],
                  "counts": self.layout.split_file("class_counts.json", imbalance), "split": split}
        if self.validation_split:  # the card's tau is chosen on validation
            inputs["val_logits"] = [self.layout.training_file("val_logits", *astuple(m)) for m in members]
        return inputs

    def model_members(self, group: str) -> list[dict]:
        """What an export job writes: for each member of the group, its output names and what its card says of
        its making (model_about). A job param: a change to a member's recipe re-exports its group."""
        return [{**member, "about": self.model_about(member["training"], imbalance_key(member["imbalance_factor"]),
                                                     member["seed"])}
                for member in self.layout.model_members(group)]

    def model_about(self, training: str, imbalance: str, seed: str) -> dict:
        """What a model's card says of its making (bagmar.models.files.export adds the rest)."""
        recipe = self.model_recipe(training, imbalance, seed)["recipe"]
        return {"name": Member(training, imbalance, seed).name, "run_name": self.config["run_name"],
                "dataset": self.dataset, "training": training,
                "imbalance_factor": float(imbalance), "seed": int(seed), "num_classes": self.num_classes,
                "image_lists": self.image_lists, "image_size": self.image_size, "recipe": recipe}

    def models(self) -> list[str]:
        """Every training's model files (MODEL_FILES), for the final target (released checkpoints are the
        authors' files: imported, not handed out again)."""
        return [self.layout.model_file(kind, *astuple(member)) for member in self.layout.members()
                if member.training not in self.layout.released for kind in ("weights", "card")]

    def each_training(self, kind: str) -> list[tuple[dict, str]]:
        """(keys, path) of one kind of training file, for every training of the run that has it (a released
        checkpoint has a model and test outputs, no training history or statistics)."""
        return [(member.keys(), self.layout.training_file(kind, *astuple(member))) for member in self.layout.members()
                if kind in RELEASED_FILES or member.training not in self.layout.released]

    def each_evaluation(self, kind: str) -> list[tuple[dict, str]]:
        """(keys, path) of one kind of evaluation file, for every training that a variant evaluates, at every
        imbalance factor and seed (each file holds all of that training's variants)."""
        return [(member.keys(), self.layout.evaluation_file(kind, *astuple(member)))
                for member in self.layout.members() if member.training in self.layout.evaluated]

    def headline_model(self) -> str:
        """Which model of its training the headline figures are: the final epoch, or a released checkpoint's
        test-selected best epoch."""
        training = self.config["variants"][self.config["report"]["headline_variant"]]["training"]
        return ("the released checkpoint (its test-selected best epoch)" if training in self.layout.released
                else "final-epoch model")

    def compared_table(self) -> list[str]:
        """The paper-format table of the run that report.compare_with names, if its results exist now (an input
        then, so that the table follows it); none otherwise."""
        other = self.config["report"].get("compare_with")
        path = Path("results", other, "tables", "paper_table.csv") if other else None
        return [str(path)] if path is not None and path.is_file() else []

    def headline_links(self) -> dict[float, list[dict]]:
        """Per imbalance factor, each seed's training log and model of the headline variant (for the tables)."""
        training = self.config["variants"][self.config["report"]["headline_variant"]]["training"]
        return {
            float(f): [{"seed": s, "log": self.layout.group_log(self.layout.group_of(Member(training, f, s))),
                        "model": self.layout.training_file("model", training, f, s)} for s in self.seeds]
            for f in self.imbalance_factors
        }


class _Checks:
    """The cross-field rules of a config the schema accepts (defaults filled), each problem one line."""

    def __init__(self, run: Run, train_resources: set[str]):
        self.run, self.config, self.train_resources = run, run.config, train_resources

    def problems(self) -> list[str]:
        found = self.references() + self.tau_grid() + self.training_settings()
        found += self.image_list_rules() if self.run.image_lists else self.cifar_rules()
        return found + self.fused_settings()

    def references(self) -> list[str]:
        """Names that must be keys of another section."""
        config, found = self.config, []
        trainings, variants, report = config["trainings"], config["variants"], config["report"]
        for name, variant in variants.items():
            if variant["training"] not in trainings:
                found.append(f"variants.{name}.training = '{variant['training']}' is not a key of trainings "
                             f"(one of: {', '.join(trainings)})")
        if report["headline_variant"] not in variants:
            found.append(f"report.headline_variant = '{report['headline_variant']}' is not a key of variants "
                         f"(one of: {', '.join(variants)})")
        for name in report.get("published", {}):
            if name not in variants:
                found.append(f"report.published.{name} is not a key of variants (one of: {', '.join(variants)})")
            elif name == report["headline_variant"] and report.get("paper"):
                found.append(f"report.published.{name}: the headline variant's published figures are "
                             "report.paper's; write them there only")
        return found

    def tau_grid(self) -> list[str]:
        grid = self.config["tau_grid"]
        if grid["stop"] < grid["start"]:
            return [f"tau_grid.stop ({grid['stop']}) is below tau_grid.start ({grid['start']})"]
        post_hoc = any(v["evaluation"] in POST_HOC for v in self.config["variants"].values())
        if post_hoc and 1.0 not in self.run.taus:
            return [f"tau_grid {grid} must contain tau = 1.0, the post-hoc rules' headline column; "
                    f"it gives {self.run.taus}"]
        return []

    def training_settings(self) -> list[str]:
        """Finite numbers, each loss's own settings only, and no tau-normalisation of a cosine classifier."""
        found, trainings = [], self.config["trainings"]
        default_loss = training_defaults()["loss"]
        for name, training in trainings.items():
            if "released" in training:
                found += self.released_training(name, training)
                continue
            loss = training.get("loss", default_loss)
            if loss not in LOSS_SETTINGS and not is_user_loss(loss):
                found.append(f"trainings.{name}.loss = '{loss}' is not one of {', '.join(LOSS_SETTINGS)}, nor a "
                             "function of your own as module:function")
                continue
            if is_user_loss(loss):
                try:
                    user_loss(loss)
                except RecipeError as error:
                    found.append(f"trainings.{name}.{error}")
            for key, value in training.items():
                if isinstance(value, str):  # loss, protocol, sampler, stage1: the schema checked them
                    continue
                if not math.isfinite(value):
                    found.append(f"trainings.{name}.{key} = {value} is not a finite number")
                elif key in FUSABLE and key not in loss_settings(loss):
                    found.append(f"trainings.{name}.{key} is not a setting of loss {loss} "
                                 f"(its settings: {', '.join(loss_settings(loss)) or 'none'})")
        for name, variant in self.config["variants"].items():
            if variant["evaluation"] == "tau_norm" and trainings.get(variant["training"], {}).get("loss") == "ldam_drw":
                found.append(f"variants.{name}: tau_norm rescales a linear classifier's weights; "
                             f"{variant['training']} trains LDAM's cosine classifier, whose weights all have the "
                             "same norm")
        return found

    def released_training(self, name: str, training: dict) -> list[str]:
        """The authors' checkpoints: nothing else set, CIFAR's network, one file per imbalance factor, each present
        (a missing one is named with where to download it, before any job)."""
        where, found = f"trainings.{name}", []
        if self.run.image_lists:
            return [f"{where}.released: released checkpoints are CIFAR's ResNet-32; {self.run.dataset} trains "
                    "torchvision ResNets (a released stage-1 checkpoint is a stage1 file there)"]
        found += [f"{where}.{key}: a released training takes no other setting (its checkpoint is as trained)"
                  for key in sorted(training.keys() - {"released"})]
        given = {imbalance_key(f): entry for f, entry in training["released"].items()}
        for factor in map(imbalance_key, self.config["imbalance_factors"]):
            entry = given.get(factor)
            if entry is None:
                found.append(f"{where}.released has no checkpoint for imbalance factor {factor}; add one, or drop "
                             "the factor from imbalance_factors")
            elif not Path(entry["path"]).is_file():
                source = f"download it from {entry['url']}" if entry.get("url") else "fetch it"
                found.append(f"{where}.released.{factor}: {entry['path']} is missing; {source} and place it there")
        return found

    def fused_settings(self) -> list[str]:
        fusion = self.run.fusion
        if fusion == "none":
            return []
        return [f"trainings.{name}.{key}: fused trainings share every recipe setting but their loss and its "
                f"settings (fusion: {fusion}); set recipe.{key} for all, or fusion: none"
                for name, training in self.config["trainings"].items()
                if name not in self.run.layout.alone and name not in self.run.layout.released
                for key in sorted(training.keys() - set(FUSABLE))  # a named recipe's training trains alone
                if not (key == "recipe" and training[key] == SHARED_RECIPE)]

    def cifar_rules(self) -> list[str]:
        """The CIFAR recipe's rules (CIFAR-10/100 and the synthetic set)."""
        config, run, found = self.config, self.run, []
        if "image_list_recipe" in config:
            found.append("image_list_recipe is for the image-list data sets (imagenet_lt, places_lt, inat2018, "
                         f"miniature); dataset {run.dataset} trains under recipe")
        for name, training in config["trainings"].items():
            for key in sorted(training.keys() - CIFAR_TRAINING_KEYS - {"released"}):
                found.append(f"trainings.{name}.{key} is a setting of image-list trainings; {run.dataset} trains "
                             "ResNet-32 under recipe")
        recipe = config["recipe"]
        smallest = min(sum(long_tailed_counts(run.num_classes, run.per_class, f)) for f in config["imbalance_factors"])
        if recipe["batch_size"] > smallest:
            found.append(f"recipe.batch_size ({recipe['batch_size']}) is larger than the smallest long-tailed split "
                         f"({smallest} images at imbalance factor {max(config['imbalance_factors']):g}); "
                         f"allowed: 1 to {smallest}")
        if recipe["warmup_epochs"] > recipe["epochs"]:
            found.append(f"recipe.warmup_epochs ({recipe['warmup_epochs']}) exceeds recipe.epochs ({recipe['epochs']})")
        found += [f"recipe: {problem}" for problem in schedule_problems(recipe)]
        for name, training in config["trainings"].items():
            if training.get("recipe", SHARED_RECIPE) == SHARED_RECIPE:
                continue  # the run's recipe, checked above
            trained, where = run.training_recipe(name, 0), f"trainings.{name} (recipe {training['recipe']})"
            if trained["warmup_epochs"] > trained["epochs"]:
                found.append(f"{where}: warmup_epochs ({trained['warmup_epochs']}) exceeds epochs "
                             f"({trained['epochs']}); train more epochs")
            if trained["batch_size"] > smallest:
                found.append(f"{where}: batch_size ({trained['batch_size']}) is larger than the smallest long-tailed "
                             f"split ({smallest} images)")
        return found

    def image_list_rules(self) -> list[str]:
        """An image-list run: one training per job, the list's own imbalance factor, stage-1 weights that exist."""
        config, run, found = self.config, self.run, []
        if "recipe" in config:
            found.append(f"recipe is the CIFAR recipe; dataset {run.dataset} trains under image_list_recipe "
                         "(bagmar.config.recipe.ImageListRecipe)")
        if run.fusion != "none":
            found.append(f"fusion: {run.fusion}: image-list trainings run one network per job; set fusion: none")
        if [float(f) for f in config["imbalance_factors"]] != [run.list_imbalance]:
            found.append(f"imbalance_factors: {run.dataset}'s split is its training list, whose largest class over "
                         f"its smallest is {run.list_imbalance:g}; set imbalance_factors: [{run.list_imbalance:g}]")
        for training in config["trainings"]:
            if config["trainings"][training].get("recipe", SHARED_RECIPE) != SHARED_RECIPE:
                found.append(f"trainings.{training}.recipe names a CIFAR recipe; an image-list training sets its "
                             "settings itself (over image_list_recipe)")
                continue
            found += self.image_list_training(training, run.training_recipe(training, 0))
        return found

    def stage1_cycle(self, training: str) -> list[str]:
        """The circle of "training:<name>" stage1s that ``training`` starts, [a, b, ..., a]; empty if it ends in
        weights of their own."""
        chain, trainings = [training], self.config["trainings"]
        while (stage1 := trainings.get(chain[-1], {}).get("stage1", "")).startswith(STAGE1_TRAINING):
            chain.append(stage1.removeprefix(STAGE1_TRAINING))
            if chain[-1] in chain[:-1]:
                return chain[chain.index(chain[-1]):] if chain[-1] == training else []
        return []

    def image_list_training(self, training: str, recipe: dict) -> list[str]:
        """One image-list training's rules: the recipe's own (bagmar.config.recipe.image_list_problems, which
        ImageListRecipe enforces too), its stage-1 weights, its batch over its processes, its resources."""
        where, trainings = f"trainings.{training}", self.config["trainings"]
        found = [f"{where}: {problem}" for problem in image_list_problems(recipe)]
        stage1 = recipe.get("stage1")
        if stage1 is not None and stage1.startswith(STAGE1_TRAINING):
            source = stage1.removeprefix(STAGE1_TRAINING)
            if source not in trainings or source == training:
                found.append(f"{where}.stage1 = '{stage1}' names no other training (one of: {', '.join(trainings)})")
            elif self.run.training_recipe(source, 0)["protocol"] == "classifier_retraining":
                found.append(f"{where}.stage1 = '{stage1}' is a classifier re-training; start from a stage-1 "
                             "training (end_to_end or last_block_finetuning)")
            elif cycle := self.stage1_cycle(training):
                found.append(f"{where}.stage1: the trainings start from each other in a circle "
                             f"({' -> '.join(cycle)}); one of them must start from weights of its own (end_to_end, "
                             'or stage1 "torchvision:<weights>", a file, or "random")')
        elif stage1 is not None and stage1.startswith(STAGE1_TORCHVISION):
            try:
                path, url = torchvision_weights(stage1)
            except RecipeError as error:
                found.append(f"{where}: {error}")
            else:
                if not path.is_file():
                    name = stage1.removeprefix(STAGE1_TORCHVISION)
                    found.append(f"{where}.stage1 = '{stage1}': {path} is not there; download {url} to it (online: "
                                 f"python -c \"import torchvision; torchvision.models.get_weight('{name}')"
                                 ".get_state_dict(check_hash=True)\", torchvision's weights API, puts it there and "
                                 "checks its checksum)")
        elif stage1 not in (None, STAGE1_RANDOM) and not Path(stage1).is_file():
            found.append(f"{where}.stage1 = '{stage1}': no such file; give the stage-1 weights' path, "
                         '"training:<name>", "torchvision:<weights>" or "random"')
        if recipe["epochs"] == 1:
            found.append(f"{where}: epochs 1 trains at learning rate 0: the released cosine schedule gives epoch e of E "
                         "lr (1 + cos(pi e / E)) / 2, which is 0 at e = E; train 2 epochs or more")
        if recipe["batch_size"] > self.run.train_images:
            found.append(f"{where}: batch_size {recipe['batch_size']} is larger than the training list "
                         f"({self.run.train_images} images)")
        processes = recipe["gpus"] * recipe["nodes"]
        if recipe["batch_size"] % processes:
            found.append(f"{where}: batch_size {recipe['batch_size']} does not divide over {processes} processes "
                         f"(gpus: {recipe['gpus']} x nodes: {recipe['nodes']}; the global batch is the recipe's, "
                         "each process takes batch_size / processes)")
        overridden = sorted(self.train_resources & MULTI_NODE_RESOURCES)
        if recipe["nodes"] > 1 and overridden:
            found.append(f"{where}: nodes: {recipe['nodes']}, but the profile (or --set-resources) sets "
                         f"{', '.join(overridden)} for the train rule, which replaces what a training on several "
                         "nodes asks SLURM for (--gpus is the job's total; the training asks for gres gpu:<gpus> a "
                         "node); select a GPU type with constraint (sbatch -C) instead")
        return found
