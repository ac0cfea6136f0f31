# Evaluation: one job per training group (bagmar.config.layout), as the trainings ran: each member whose training a
# variant reads, under every variant of that training (plain, or a post-hoc rule with its tau sweep), from
# the saved test outputs. Each member's files are the same paths whatever the fusion.


# A rule for each kind of group (bagmar.config.layout, Layout.kinds): their outputs have different shapes.
for kind in LAYOUT.kinds():

    rule:
        name:
            "evaluate" if kind == "fused" else f"evaluate_{kind}"
        input:
            unpack(for_group(RUN.evaluation_inputs)),
        output:
            **LAYOUT.evaluation_outputs(kind),
        log:
            LAYOUT.group_log(stage="evaluate"),
        benchmark:
            LAYOUT.group_benchmark(stage="evaluate")
        wildcard_constraints:
            group=group_constraint(kind),
        conda:
            "../../envs/bagmar.yaml"
        params:
            **members_params(RUN.evaluation_members),
            **code_params("evaluate.py"),
        script:
            "../../scripts/evaluate.py"
