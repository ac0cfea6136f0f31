# Models to hand out: each training's final model as model.safetensors with its card model.json (the recipe, the
# data and split, the seed, the code, its figures, the class prior, the file's sha256), written from the
# training's own files after it, so that adding them never retrains (bagmar.models.files).


rule export_model:
    input:
        unpack(lambda w: RUN.model_inputs(w.training, w.imbalance, w.seed)),
    output:
        weights=LAYOUT.model_file("weights"),
        card=LAYOUT.model_file("card"),
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
