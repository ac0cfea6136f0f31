# BaGMar reproduction: CIFAR-100-LT table from scratch.
#   snakemake --cores all --resources gpu=1                          # the paper run (config/config.yaml)
#   snakemake --cores all --configfile config/demo.yaml              # the synthetic demo
from snakemake.utils import min_version

min_version("9.0")


# A --configfile is a complete configuration of its own (not merged into the paper run's);
# --config KEY=VALUE overrides apply on top of whichever file is used.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# the data set's own rules (RUN.data_rules): cifar and split, synthetic and split, or image_lists (and miniature)
for data_rules in RUN.data_rules:

    include: f"workflow/rules/{data_rules}.smk"


include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.render.output,
        rules.plots.output,
        RUN.models(),
        rules.readme.output if config["report"]["readme"] else [],
