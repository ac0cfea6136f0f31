# Evaluation: per (variant x imbalance factor x seed), PN's tau sweep from the saved test logits.


rule evaluate:
    input:
        logits=lambda w: training_dir(config["variants"][w.variant]["training"]) + "/test_logits.npz",
        counts=result("splits/imba{imbalance}/class_counts.json"),
    output:
        sweep=result("eval/{variant}/imba{imbalance}/seed{seed}/tau_sweep.csv"),
        per_class=result("eval/{variant}/imba{imbalance}/seed{seed}/per_class.csv"),
    params:
        taus=variant_taus,
        evaluation=lambda w: config["variants"][w.variant]["evaluation"],
        code=code("evaluate.py"),
    conda:
        "../../envs/bagmar.yaml"
    log:
        result("logs/evaluate/{variant}_imba{imbalance}_seed{seed}.log"),
    benchmark:
        result("benchmarks/evaluate/{variant}_imba{imbalance}_seed{seed}.tsv")
    script:
        "../../scripts/evaluate.py"
