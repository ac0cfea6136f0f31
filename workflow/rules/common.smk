# The glue between the config and the rules: the package check, the one load of the config (bagmar.config),
# wildcard constraints, the code fingerprint of each job, and the train rule's resources for SLURM.
import os
import re
import sys
from functools import cache
from importlib.util import find_spec
from pathlib import Path

# Relative to the working directory, so that a moved or copied project keeps its recorded inputs.
PACKAGE_SRC = Path(os.path.relpath(Path(workflow.basedir) / "src"))
PACKAGE = PACKAGE_SRC / "bagmar"
TEMPLATES = Path(os.path.relpath(Path(workflow.basedir) / "templates"))
SCRIPTS = Path(workflow.basedir) / "scripts"


def _refuse(message):
    """Stop before any job, with the message and no traceback."""
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _use_this_checkout():
    """The workflow and its jobs import bagmar from this checkout's src/, whatever else is installed: first on this
    process's path and on PYTHONPATH, which every job's Python inherits (local, or through SLURM's environment).
    """
    src = str(PACKAGE_SRC.resolve())
    if sys.path[:1] != [src]:
        sys.path.insert(0, src)
    inherited = [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src
    ]
    os.environ.update(PYTHONPATH=os.pathsep.join([src, *inherited]))
    # imported from elsewhere before (another checkout's install): import it again
    for name in [m for m in sys.modules if m == "bagmar" or m.startswith("bagmar.")]:
        del sys.modules[name]
    found = find_spec("bagmar")
    if found is None or Path(found.origin).resolve().parent != PACKAGE.resolve():
        _refuse(
            f"this checkout's package {PACKAGE.resolve()} cannot be imported; is src/ complete?"
        )


_use_this_checkout()
from bagmar.config import ConfigError, load  # noqa: E402
from bagmar.config.layout import Member  # noqa: E402
from bagmar.config.keys import Handed, member_keys  # noqa: E402
from bagmar.fingerprint import as_params, code_fingerprint  # noqa: E402

# The train rule's resources that the command line or a profile's set-resources replace: a training on several
# nodes sets some itself (bagmar.config names the clash before any job).
_SETTINGS = getattr(workflow, "resource_settings", None)
_PROFILE_TRAIN = (getattr(_SETTINGS, "overwrite_resources", None) or {}).get(
    "train", {}
)

try:  # one line per problem and no traceback: the fix is in the config, not the code
    RUN = load(config, train_resources=set(_PROFILE_TRAIN))
except ConfigError as error:
    _refuse(error)
LAYOUT = RUN.layout
result = LAYOUT.path


wildcard_constraints:
    imbalance=r"\d+(\.\d+)?",
    seed=r"\d+",
    training=r"[A-Za-z0-9_]+",
    group="|".join(re.escape(name) for name in LAYOUT.groups),


def group_constraint(kind):
    """The groups of one kind (bagmar.config.layout, Layout.kinds), for the rules of that kind."""
    return "|".join(re.escape(name) for name in LAYOUT.group_names(kind))


def code(script, *modules):
    """Rerun trigger: the fingerprint of what a job runs (bagmar.fingerprint), one short hash per module, with
    the user's own ``modules`` it runs (a loss of one's own).

    Handed to Snakemake as params, one a module ("bagmar.training.loop <hash>"), so that only a change in
    the code a job can reach replans it, and `snakemake -n` names the module that changed in one short line;
    comments, docstrings and formatting change nothing. The profiles leave Snakemake's own `code` trigger off: it
    compares a script's text, comments included.
    """
    return code_fingerprint(SCRIPTS / script, PACKAGE, *modules)


def code_params(script):
    """A rule's code params (bagmar.fingerprint.as_params): ``**code_params("evaluate.py")``."""
    return as_params(code(script))


def model_label(path):
    """A model card's label in the report: its training's directory under train/ ({group} filled in by Snakemake)."""
    return os.path.dirname(os.path.relpath(path, result("train")))


def training_code(group):
    """The code fingerprint of a training group's job (its rerun trigger, and its models' cards)."""
    script = "train_image_list.py" if RUN.image_lists else "train.py"
    return code(script, *RUN.loss_files(group))


def training_code_params(prefix="code"):
    """The code params of a training group's job, one a module, as many as the group that reaches the most (groups
    may run different losses of the user's own); bagmar.fingerprint.as_params pads the others.
    """
    slots = max(len(training_code(group)) for group in LAYOUT.groups)
    of_group = cache(
        lambda group: as_params(training_code(group), prefix, slots)
    )  # once a group, not a slot
    return {
        f"{prefix}_{i}": lambda w, i=i: of_group(w.group)[f"{prefix}_{i}"]
        for i in range(slots)
    }


def members_params(method):
    """A job's members handed whole (bagmar.config.keys.Handed, never compared), and one rerun key a training
    (keys_0, keys_1, ...): a change to one training's settings reads in one line. Past a group's own trainings the
    keys repeat its first: Snakemake compares params as a set of values, so the padding changes nothing there,
    whatever the number of trainings in the config.
    """
    slots = len(config["trainings"])

    @cache  # once a group, not a slot
    def padded(group):
        keys = member_keys(method(group), config["trainings"])
        return keys + keys[:1] * slots if keys else [""] * slots

    def key(i):
        return lambda w: padded(w.group)[i]

    return {
        "members": lambda w: Handed(method(w.group)),
        **{f"keys_{i}": key(i) for i in range(slots)},
    }


def for_group(method):
    """An input or params function of the {group} wildcard that asks the Run."""
    return lambda wildcards: method(wildcards.group)


# one callable a resource, as the resources directive takes them; None leaves a resource unset
TRAINING_RESOURCES = {
    name: (
        lambda wildcards, name=name: RUN.training_resources(wildcards.group).get(name)
    )
    for name in ("gpu", "nodes", "gres", "tasks", "tasks_per_gpu", "mpi")
}
