"""The configuration layer: a workflow config in, everything the rules need out.

``problems(config)`` lists every problem of a config, one line each: the schema's (``schema.yaml`` beside this
file: keys, types, allowed values and defaults) and the cross-field rules a schema cannot express. ``load(config)``
refuses a config with problems (``ConfigError``), fills the schema's defaults in place and returns a ``Run``: the
run's data-set facts, its trainings and their recipes, the groups they train in, the paths of every file
(bagmar.config.layout) and the job parameters of each rule. ``workflow/rules/common.smk`` calls ``load`` once and its
rules only ask the ``Run``; nothing here imports torch, so planning a run stays fast.
"""

from .run import ConfigError, Run, load, problems

__all__ = ["ConfigError", "Run", "load", "problems"]
