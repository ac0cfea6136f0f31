# Training: one job per training group (bagmar.layout: a single training with fusion: none, else all
# trainings of one imbalance factor and seed, or of one imbalance factor, fused into one network by
# bagmar.train.train_group). Each member's files are the same paths whatever the fusion.


rule train:
    input:
        images=result("data/images.npz"),
        indices=group_split,
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
        gpu=1,
    params:
        members=group_members,
        checkpoints=lambda w: LAYOUT.group_checkpoints(w.group),
        keep_matrix=lambda w: NUM_CLASSES <= config["statistics_matrix_max_classes"],
        code=code("train.py"),
    script:
        "../../scripts/train.py"
