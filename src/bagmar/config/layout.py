"""Where a run's files live and which trainings run together: the one place both are decided.

The workflow (``workflow/rules/common.smk``), ``main.py`` and the tests read this module; scripts never
build or parse a path (they write what Snakemake hands them and get their keys as params).

Every training is one (training config, imbalance factor, seed): a *member*. Members are trained in
*groups*, one Snakemake job each, chosen by the config's ``fusion``:

- ``none``: a group of one per member;
- ``trainings``: all trainings of one imbalance factor and seed (one fused network on the GPU);
- ``trainings_and_seeds``: all trainings and seeds of one imbalance factor (the paper run).

A training that selects a named recipe of its own (``trainings.<name>.recipe``, bagmar.config.recipe.named_recipe)
cannot share a fused network with the others (its batch, schedule or augmentation differ): under fusion it trains
*alone*, one group per member as with ``none``. A *released* training (``trainings.<name>.released``: the authors'
checkpoints, bagmar.models.released) is not trained but imported, also one group per member, with a model and test
outputs only. Each kind of group (``KINDS``) has its own shape, so its own rules.

A member's files are the same paths whatever the grouping: ``train/<training>/imba<IF>/seed<seed>/``
and ``eval/<training>/imba<IF>/seed<seed>/``. A group's name is the part of that directory which its
members share (``ce/imba100/seed0``, ``imba100/seed0`` or ``imba100``), so one training rule and one
evaluation rule over a ``{group}`` wildcard list every member's files as outputs. The evaluation job of a
group evaluates its members whose training a variant reads (every variant of each, in one process).
"""

from __future__ import annotations

import dataclasses
import itertools

from ..data.image_lists import validation_split

SHARED_RECIPE = "shared"  # a training's recipe when it names none: the run's own (config `recipe`)

TRAINING_FILES = {"model": "model.pt", "logits": "test_logits.npz", "metrics": "metrics.csv",
                  "statistics": "statistics.npz"}
# a data set with a validation split (bagmar.data.image_lists.validation_split): the final model's logits on it,
# written once at the end of the training, from which the val-selected tau is chosen
VALIDATION_FILES = {"val_logits": "val_logits.npz"}
EVALUATION_FILES = {"sweep": "tau_sweep.csv", "per_class": "per_class.csv"}
MODEL_FILES = {"weights": "model.safetensors", "card": "model.json"}  # a training's model to hand out (export rule)
KINDS = ("fused", "alone", "released")  # the kinds of groups (Layout.kind_of), each with its own rules
RELEASED_FILES = ("model", "logits")  # what an imported released checkpoint has of TRAINING_FILES
FUSIONS = {  # fusion -> the member keys that a group shares (a leading slice of the member directory)
    "none": ("training", "imbalance", "seed"),
    "trainings": ("imbalance", "seed"),
    "trainings_and_seeds": ("imbalance",),
}
_MEMBER_DIR = {"training": "{training}", "imbalance": "imba{imbalance}", "seed": "seed{seed}"}


def imbalance_key(imbalance_factor: float | str) -> str:
    """An imbalance factor as it appears in paths and wildcards: 100, 10, 2.5."""
    return f"{float(imbalance_factor):g}"


@dataclasses.dataclass(frozen=True)
class Member:
    """One training: a training config of the run at one imbalance factor and seed (strings, as in paths)."""

    training: str
    imbalance: str
    seed: str

    @property
    def name(self) -> str:
        return f"{self.training} IF {self.imbalance} seed {self.seed}"

    def keys(self) -> dict:
        """The member's keys as a script receives them."""
        return {"training": self.training, "imbalance_factor": float(self.imbalance), "seed": int(self.seed)}


class Layout:
    """A run's paths (all under ``results/<run_name>/``) and its group table, from the validated config."""

    def __init__(self, config: dict):
        self.results = f"results/{config['run_name']}"
        self.validation_split = validation_split(config["dataset"]["name"])  # "val", or None: the data set has none
        self.fusion = config.get("fusion", "none")  # the schema's default, for a config not yet validated
        self.trainings = list(config["trainings"])
        own_recipe = [name for name, training in config["trainings"].items()
                      if training.get("recipe", SHARED_RECIPE) != SHARED_RECIPE]
        self.alone = own_recipe if self.fusion != "none" else []  # trainings that train alone under fusion
        self.released = [name for name, training in config["trainings"].items() if "released" in training]
        read = {variant["training"] for variant in config.get("variants", {}).values()}
        self.evaluated = [training for training in self.trainings if training in read]  # trainings a variant reads
        self.imbalances = [imbalance_key(f) for f in config["imbalance_factors"]]
        self.seeds = [str(s) for s in config["seeds"]]
        self.groups: dict[str, list[Member]] = {}
        for training, imbalance, seed in itertools.product(self.trainings, self.imbalances, self.seeds):
            member = Member(training, imbalance, seed)
            self.groups.setdefault(self.group_of(member), []).append(member)
        for members in self.groups.values():
            members.sort(key=self._order)

    # ---------------------------------------------------------------- paths

    def path(self, *parts: str) -> str:
        """results/<run_name>/<parts...>: every output path is built through here."""
        return "/".join([self.results, *parts])

    def training_file(self, kind: str, training="{training}", imbalance="{imbalance}", seed="{seed}") -> str:
        """One of a training's files (TRAINING_FILES, VALIDATION_FILES), the same path whatever the fusion."""
        files = {**TRAINING_FILES, **VALIDATION_FILES}
        return self.path("train", training, f"imba{imbalance}", f"seed{seed}", files[kind])

    def training_files(self, kind: str = "fused") -> dict[str, str]:
        """What a training of one kind of group writes: TRAINING_FILES, and VALIDATION_FILES where the data set has
        a validation split; an imported released checkpoint only RELEASED_FILES."""
        if kind == "released":
            return {k: v for k, v in TRAINING_FILES.items() if k in RELEASED_FILES}
        return {**TRAINING_FILES, **(VALIDATION_FILES if self.validation_split else {})}

    def model_file(self, kind: str, training="{training}", imbalance="{imbalance}", seed="{seed}") -> str:
        """One of a training's MODEL_FILES, beside its training files (written from them, after training)."""
        return self.path("train", training, f"imba{imbalance}", f"seed{seed}", MODEL_FILES[kind])

    def evaluation_file(self, kind: str, training="{training}", imbalance="{imbalance}", seed="{seed}") -> str:
        """One of a training's evaluation files: every variant of that training, one block of rows each.

        Keyed by training, not variant: one job reads the saved outputs once and evaluates them under every
        rule the config asks of them (a Snakemake job costs seconds of start-up, the evaluation a fraction).
        """
        return self.path("eval", training, f"imba{imbalance}", f"seed{seed}", EVALUATION_FILES[kind])

    def split_file(self, name: str, imbalance="{imbalance}") -> str:
        return self.path("splits", f"imba{imbalance}", name)

    # ---------------------------------------------------------------- groups

    def group_of(self, member: Member) -> str:
        """The name of the group that trains this member: the shared part of its members' directories."""
        shared = FUSIONS["none" if self.kind_of(member.training) != "fused" else self.fusion]
        return "/".join(_MEMBER_DIR[key].format(**vars(member)) for key in shared)

    def kind_of(self, training: str) -> str:
        """released (imported checkpoints), alone (a named recipe under fusion) or fused (the rest; with fusion
        none, groups of one)."""
        return "released" if training in self.released else "alone" if training in self.alone else "fused"

    def kinds(self) -> list[str]:
        """The kinds of group this run has (KINDS), each with its own rules."""
        return [kind for kind in KINDS if self.group_names(kind)]

    def group_names(self, kind: str = "fused") -> list[str]:
        """The groups of one kind, for the rules' wildcard constraint."""
        return [name for name, members in self.groups.items() if self.kind_of(members[0].training) == kind]

    def _order(self, member: Member) -> tuple:
        return (self.trainings.index(member.training), self.seeds.index(member.seed))

    def _member_outputs(self, files: dict[str, str], stage: str, trainings: list[str], kind: str) -> dict[str, str]:
        """A group rule's outputs in ``{group}``: ``<kind>_<i>`` is member i's file of that kind, over the
        members of ``trainings``.

        Every group of one kind (``kinds``) has the same shape (its members differ only in the keys it does not
        share), so member i of any group is the i-th of the keys the group does not fix, in config order.
        """
        shared = FUSIONS["none" if kind != "fused" else self.fusion]
        free = [key for key in ("training", "seed") if key not in shared]
        values = {"training": trainings, "seed": self.seeds}
        outputs = {}
        for i, combination in enumerate(itertools.product(*(values[key] for key in free))):
            member_dir = [_MEMBER_DIR[key].format(**dict(zip(free, combination))) for key in free]
            for file_kind, name in files.items():
                # the group's part comes first in the directory, except that a training precedes imba<IF>
                parts = ["{group}", *member_dir] if "training" in shared else [member_dir[0], "{group}",
                                                                                *member_dir[1:]]
                outputs[f"{file_kind}_{i}"] = self.path(stage, *parts, name)
        return outputs

    def group_outputs(self, kind: str = "fused") -> dict[str, str]:
        """The training rule's outputs in ``{group}``, for the groups of one kind: every member's TRAINING_FILES
        (a released checkpoint's: RELEASED_FILES)."""
        return self._member_outputs(self.training_files(kind), "train", self._of_kind(self.trainings, kind), kind)

    def evaluation_outputs(self, kind: str = "fused") -> dict[str, str]:
        """The evaluation rule's outputs in ``{group}``, for the groups of one kind: the EVALUATION_FILES of every
        evaluated member."""
        return self._member_outputs(EVALUATION_FILES, "eval", self._of_kind(self.evaluated, kind), kind)

    def model_outputs(self, kind: str = "fused") -> dict[str, str]:
        """The export rule's outputs in ``{group}``, for the groups of one kind: every member's MODEL_FILES."""
        return self._member_outputs(MODEL_FILES, "train", self._of_kind(self.trainings, kind), kind)

    def _of_kind(self, trainings: list[str], kind: str) -> list[str]:
        return [training for training in trainings if self.kind_of(training) == kind]

    def group_members(self, group: str) -> list[dict]:
        """What a training job trains: each member's keys, name and the names of its outputs."""
        return [{**member.keys(), "name": member.name,
                 "outputs": {kind: f"{kind}_{i}" for kind in self.training_files(self.kind_of(member.training))}}
                for i, member in enumerate(self.groups[group])]

    def model_members(self, group: str) -> list[dict]:
        """What an export job writes: each member's keys, name and the names of its MODEL_FILES outputs."""
        return [{**member.keys(), "name": member.name, "outputs": {kind: f"{kind}_{i}" for kind in MODEL_FILES}}
                for i, member in enumerate(self.groups[group])]

    def evaluated_members(self, group: str) -> list[Member]:
        """The members of a group that its evaluation job evaluates (a variant reads their training)."""
        return [member for member in self.groups[group] if member.training in self.evaluated]

    def evaluation_members(self, group: str) -> list[dict]:
        """What an evaluation job evaluates: each evaluated member's keys, name and the names of its outputs."""
        return [{**member.keys(), "name": member.name,
                 "outputs": {kind: f"{kind}_{i}" for kind in EVALUATION_FILES}}
                for i, member in enumerate(self.evaluated_members(group))]

    def group_log(self, group="{group}", stage="train") -> str:
        """The log of a group's job of one stage (train or evaluate)."""
        return self.path("logs", stage, f"{group}.log")

    def group_benchmark(self, group="{group}", stage="train") -> str:
        return self.path("benchmarks", stage, f"{group}.tsv")

    def group_checkpoints(self, group: str) -> str:
        """Per-epoch checkpoints of a group: not a declared output, so a failed or killed job keeps them."""
        return self.path("checkpoints", "train", group)

    def members(self) -> list[Member]:
        return [member for members in self.groups.values() for member in members]
