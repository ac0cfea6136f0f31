# CIFAR-100 or CIFAR-10: acquisition (a local folder or archive, or a download into dataset.root) and md5
# verification, before any training. Where the data is found (root, path, download) is read from the config by the
# script and is not a rerun trigger: every copy that passes the official md5s is the same data. An unofficial
# copy is. Named after the data set: cifar100_dataset or cifar10_dataset.


rule cifar_dataset:
    name:
        f"{RUN.dataset}_dataset"
    output:
        images=result("data/images.npz"),
        provenance=result("data/provenance.json"),
    log:
        result(f"logs/{RUN.dataset}_dataset.log"),
    benchmark:
        result(f"benchmarks/{RUN.dataset}_dataset.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("prepare_cifar.py"),
        name=RUN.dataset,
        unofficial_copy=config["dataset"].get("unofficial_copy"),
    script:
        "../../scripts/prepare_cifar.py"
