# Models to hand out: each training's final model as model.safetensors with its card model.json (the recipe, the
# data and split, the seed, the code, its figures, the class prior, the file's sha256), written from the
# training's own files after it, so that adding them never retrains (bagmar.models.files).


rule export_model:
    input:
        unpack(lambda w: RUN.model_inputs(w.training, w.imbalance, w.seed)),
    output:
        weights=LAYOUT.model_file("weights"),
        card=report(
            LAYOUT.model_file("card"),
            caption="../report/model_card.rst",
            category="Models",
            subcategory="{training}",
            labels={"imbalance factor": "{imbalance}", "seed": "{seed}"},
        ),
    log:
        result("logs/export_model/{training}/imba{imbalance}/seed{seed}.log"),
    benchmark:
        result("benchmarks/export_model/{training}/imba{imbalance}/seed{seed}.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        about=lambda w: RUN.model_about(w.training, w.imbalance, w.seed),
        taus=RUN.taus,
        training_code=lambda w: training_code(
            LAYOUT.group_of(Member(w.training, w.imbalance, w.seed))
        ),
        code=code("export_model.py"),
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
            members=for_group(LAYOUT.group_members),
            code=code("import_released.py"),
        script:
            "../../scripts/import_released.py"
