# Training: one job per (training config x imbalance factor x seed); ce and ce_pn share one.


rule train:
    input:
        images=result("data/images.npz"),
        indices=result("splits/imba{imbalance}/indices.npy"),
        code=package_code("train"),
    output:
        model=training_dir() + "/model.pt",
        logits=training_dir() + "/test_logits.npz",
        metrics=training_dir() + "/metrics.csv",
        statistics=training_dir() + "/statistics.npz",
    params:
        recipe=training_recipe,
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
