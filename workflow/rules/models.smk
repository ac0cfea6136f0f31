# Models to hand out: each training's final model as model.safetensors with its card model.json (the recipe, the
# data and split, the seed, the code, its figures, the class prior, the file's sha256), written from the
# training's own files after it, so that adding them never retrains (bagmar.models.files).


# One job per training group, as it trained (a rule for each kind of group: their outputs' shapes differ).
for kind in [kind for kind in LAYOUT.kinds() if kind != "released"]:

    rule:
        name:
            "export_model" if kind == "fused" else f"export_model_{kind}"
        input:
            unpack(for_group(RUN.model_inputs)),
        output:
            **{
                name: (
                    report(
                        path,
                        caption="../report/model_card.rst",
                        category="Models",
                        labels={"model": model_label(path)},
                    )
                    if name.startswith("card")
                    else path
                )
                for name, path in LAYOUT.model_outputs(kind).items()
            },
        log:
            LAYOUT.group_log(stage="export_model"),
        benchmark:
            LAYOUT.group_benchmark(stage="export_model")
        wildcard_constraints:
            group=group_constraint(kind),
        conda:
            "../../envs/bagmar.yaml"
        params:
            **members_params(RUN.model_members),
            **training_code_params("training_code"),
            **code_params("export_model.py"),
            taus=RUN.taus,
        script:
            "../../scripts/export_model.py"


# The authors' released checkpoints (a training with `released`): mapped into ResNet-32 and tested on the run's
# test set, written as a training's model and test outputs, so that every evaluation and table reads them as
# it reads a trained model (bagmar.models.released).
if "released" in LAYOUT.kinds():

    rule import_released:
        input:
            unpack(for_group(RUN.released_inputs)),
        output:
            **LAYOUT.group_outputs("released"),
        log:
            LAYOUT.group_log(),
        benchmark:
            LAYOUT.group_benchmark()
        wildcard_constraints:
            group=group_constraint("released"),
        conda:
            "../../envs/bagmar.yaml"
        threads: config["threads"]["train"]
        params:
            **members_params(LAYOUT.group_members),
            **code_params("import_released.py"),
        script:
            "../../scripts/import_released.py"
