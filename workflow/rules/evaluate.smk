# Evaluation: per (variant x imbalance factor x seed), PN's tau sweep from the saved test logits.


rule evaluate:
    input:
        logits=lambda w: training_file(
            "logits", config["variants"][w.variant]["training"]
        ),
        counts=LAYOUT.split_file("class_counts.json"),
    output:
        sweep=LAYOUT.evaluation_file("sweep"),
        per_class=LAYOUT.evaluation_file("per_class"),
    log:
        result("logs/evaluate/{variant}_imba{imbalance}_seed{seed}.log"),
    benchmark:
        result("benchmarks/evaluate/{variant}_imba{imbalance}_seed{seed}.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        taus=variant_taus,
        evaluation=lambda w: config["variants"][w.variant]["evaluation"],
        key_columns=lambda w: {
            "variant": w.variant,
            "imbalance_factor": float(w.imbalance),
            "seed": int(w.seed),
        },
        code=code("evaluate.py"),
    script:
        "../../scripts/evaluate.py"
