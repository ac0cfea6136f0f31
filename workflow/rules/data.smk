# Data: the balanced image set (CIFAR-100 or synthetic), then one long-tailed cut per imbalance factor.

if config["dataset"]["name"] == "synthetic":

    rule synthetic_dataset:
        input:
            code=package_code("data"),
        output:
            images=result("data/images.npz"),
        params:
            synthetic=config["dataset"]["synthetic"],
        conda:
            "../../envs/bagmar.yaml"
        log:
            result("logs/synthetic_dataset.log"),
        benchmark:
            result("benchmarks/synthetic_dataset.tsv")
        script:
            "../../scripts/make_synthetic.py"

else:

    rule cifar100_dataset:
        input:
            code=package_code("cifar"),
        output:
            images=result("data/images.npz"),
        params:
            root=config["dataset"]["root"],
            download=config["dataset"]["download"],
        conda:
            "../../envs/bagmar.yaml"
        log:
            result("logs/cifar100_dataset.log"),
        benchmark:
            result("benchmarks/cifar100_dataset.tsv")
        script:
            "../../scripts/prepare_cifar100.py"


rule split:
    input:
        images=result("data/images.npz"),
        code=package_code("data"),
    output:
        indices=result("splits/imba{imbalance}/indices.npy"),
        counts=result("splits/imba{imbalance}/class_counts.json"),
    params:
        imbalance_factor=lambda w: float(w.imbalance),
        seed=config["split_seed"],
    conda:
        "../../envs/bagmar.yaml"
    log:
        result("logs/split/imba{imbalance}.log"),
    benchmark:
        result("benchmarks/split/imba{imbalance}.tsv")
    script:
        "../../scripts/split.py"
