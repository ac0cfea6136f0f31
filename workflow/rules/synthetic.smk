# The synthetic balanced image set (dataset.synthetic): the demo's data, generated from its seed.


rule synthetic_dataset:
    output:
        images=result("data/images.npz"),
    log:
        result("logs/synthetic_dataset.log"),
    benchmark:
        result("benchmarks/synthetic_dataset.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("make_synthetic.py"),
        synthetic=config["dataset"]["synthetic"],
    script:
        "../../scripts/make_synthetic.py"
