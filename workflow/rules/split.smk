# One long-tailed cut of a balanced image set (CIFAR or synthetic) per imbalance factor (SPEC §1).


rule split:
    input:
        images=result("data/images.npz"),
    output:
        indices=LAYOUT.split_file("indices.npy"),
        counts=LAYOUT.split_file("class_counts.json"),  # the seed's cls_freq: a JSON list of counts
    log:
        result("logs/split/imba{imbalance}.log"),
    benchmark:
        result("benchmarks/split/imba{imbalance}.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("split.py"),
        imbalance_factor=lambda w: float(w.imbalance),
        seed=config["split_seed"],
        dataset=RUN.dataset,  # real data sets are checked against the SPEC totals at run time
    script:
        "../../scripts/split.py"
