# Training: one job per (training config x imbalance factor x seed), ce and ce_pn sharing one;
# or, with fusion on, one job per fused group (bagmar.train.train_group). Both write the same files.


if FUSION == "none":

    rule train:
        input:
            images=result("data/images.npz"),
            indices=result("splits/imba{imbalance}/indices.npy"),
            code=package_code("train"),
        output:
            **{key: f"{training_dir()}/{name}" for key, name in TRAINING_FILES.items()},
        params:
            members=group_members,
            checkpoints=checkpoint_dir,
        threads: config["threads"]["train"]
        resources:
            gpu=1,
        conda:
            "../../envs/bagmar.yaml"
        log:
            train_log(),
        benchmark:
            result("benchmarks/train/{training}_imba{imbalance}_seed{seed}.tsv")
        script:
            "../../scripts/train.py"

else:

    rule train_fused:
        input:
            images=result("data/images.npz"),
            indices=result("splits/imba{imbalance}/indices.npy"),
            code=package_code("train"),
        output:
            [
                f"{training_dir(training, '{imbalance}', seed)}/{name}"
                for seed in (SEEDS if FUSION == "trainings_and_seeds" else ["{seed}"])
                for training in config["trainings"]
                for name in TRAINING_FILES.values()
            ],
        params:
            members=group_members,
            checkpoints=checkpoint_dir,
        threads: config["threads"]["train"]
        resources:
            gpu=1,
        conda:
            "../../envs/bagmar.yaml"
        log:
            train_log(),
        benchmark:
            result(f"benchmarks/train/fused_{fused_group()}.tsv")
        script:
            "../../scripts/train.py"
