# Training: one job per (training config x imbalance factor x seed), ce and ce_pn sharing one (rule
# train); or, with fusion on, one job per fused group (rule train_fused, bagmar.train.train_group).
# Both write each model's files at the same paths.


rule:
    name:
        "train" if FUSION == "none" else "train_fused"
    input:
        images=result("data/images.npz"),
        indices=result("splits/imba{imbalance}/indices.npy"),
    output:
        training_outputs(),
    log:
        train_log(),
    benchmark:
        result(f"benchmarks/train/{train_job()}.tsv")
    conda:
        "../../envs/bagmar.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=1,
    params:
        members=group_members,
        checkpoints=checkpoint_dir,
        code=code("train.py"),
    script:
        "../../scripts/train.py"
