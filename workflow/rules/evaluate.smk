# Evaluation: per (variant x imbalance factor x seed), PN's tau sweep from the saved test logits.


rule evaluate:
    input:
        logits=lambda w: training_file(
            "logits", config["variants"][w.variant]["training"]
        ),
        counts=result("splits/imba{imbalance}/class_counts.json"),
    output:
        sweep=result("eval/{variant}/imba{imbalance}/seed{seed}/tau_sweep.csv"),
        per_class=result("eval/{variant}/imba{imbalance}/seed{seed}/per_class.csv"),
    log:
        result("logs/evaluate/{variant}_imba{imbalance}_seed{seed}.log"),
    benchmark:
        result("benchmarks/evaluate/{variant}_imba{imbalance}_seed{seed}.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        taus=variant_taus,
        evaluation=lambda w: config["variants"][w.variant]["evaluation"],
        code=code("evaluate.py"),
    script:
        "../../scripts/evaluate.py"
