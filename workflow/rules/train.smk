# Training: one job per training group (bagmar.config.layout: a single training with fusion: none, else all
# trainings of one imbalance factor and seed, or of one imbalance factor, fused into one network by
# bagmar.training.train.train_group). Each member's files are the same paths whatever the fusion.
# Image-list data sets: one network per job (bagmar.training.image_train), the same files.

if RUN.image_lists:

    # A classifier re-training (stage 2) whose stage1 is "training:<name>" takes that training's model at the
    # same seed as an input, so the DAG trains it first.
    rule train:
        input:
            train=result("data/lists/train.txt"),
            test=result(f"data/lists/{RUN.test_split}.txt"),
            # a validation list: the final model's logits on it, once, for the val-selected tau
            val=(
                [result(f"data/lists/{RUN.validation_split}.txt")]
                if RUN.validation_split
                else []
            ),
            provenance=result("data/provenance.json"),
            stage1=for_group(RUN.stage1_inputs),
        output:
            **LAYOUT.group_outputs(),
        log:
            LAYOUT.group_log(),
        benchmark:
            LAYOUT.group_benchmark()
        conda:
            "../../envs/bagmar.yaml"
        threads: config["threads"]["train"]
        resources:
            **TRAINING_RESOURCES,
        params:
            **members_params(RUN.group_members),
            **training_code_params(),
            classes=RUN.num_classes,
            checkpoints=for_group(LAYOUT.group_checkpoints),
            keep_matrix=RUN.keep_matrix,
        script:
            "../../scripts/train_image_list.py"

else:
    # Fused groups, and (under fusion) the groups of the trainings with a named recipe of their own, which train
    # alone: two shapes of outputs, a rule each (bagmar.config.layout, Layout.kinds). Released checkpoints are
    # imported instead (models.smk).
    for kind in [kind for kind in LAYOUT.kinds() if kind != "released"]:

        rule:
            name:
                "train" if kind == "fused" else f"train_{kind}"
            input:
                images=result("data/images.npz"),
                indices=for_group(RUN.group_split),
            output:
                **LAYOUT.group_outputs(kind),
            log:
                LAYOUT.group_log(),
            benchmark:
                LAYOUT.group_benchmark()
            wildcard_constraints:
                group=group_constraint(kind),
            conda:
                "../../envs/bagmar.yaml"
            threads: config["threads"]["train"]
            resources:
                gpu=1,
            params:
                **members_params(RUN.group_members),
                **training_code_params(),
                checkpoints=for_group(LAYOUT.group_checkpoints),
                keep_matrix=RUN.keep_matrix,
            script:
                "../../scripts/train.py"
