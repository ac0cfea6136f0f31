# The miniature image-list data set: JPEGs and lists in the layout of the large benchmarks, generated here.


rule miniature_dataset:
    output:
        root=directory(result("data/miniature")),
    log:
        result("logs/miniature_dataset.log"),
    benchmark:
        result("benchmarks/miniature_dataset.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("make_miniature.py"),
        miniature=config["dataset"]["miniature"],
    script:
        "../../scripts/make_miniature.py"
