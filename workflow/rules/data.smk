# Data: the balanced image set (CIFAR-100, CIFAR-10 or synthetic), then one long-tailed cut per imbalance factor;
# or an image-list data set (ImageNet-LT, Places-LT, iNaturalist 2018, the miniature), whose lists give the split.

DATASET = config["dataset"]

if IMAGE_LISTS:

    if DATASET["name"] == "miniature":

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
                miniature=DATASET["miniature"],
                code=code("make_miniature.py"),
            script:
                "../../scripts/make_miniature.py"

    # Named after the data set (places_lt_lists, ...). Finds each list in dataset.image_list.lists or downloads it,
    # verifies it (sha256 or counts) and checks every listed image before any training; training reads the
    # verified copies, and the image root from provenance.json.
    rule image_lists:
        name:
            f"{DATASET['name']}_lists"
        input:
            miniature=(
                result("data/miniature") if DATASET["name"] == "miniature" else []
            ),
        output:
            **{split: result(f"data/lists/{split}.txt") for split in LIST_SPLITS},
            provenance=result("data/provenance.json"),
            counts=LAYOUT.split_file("class_counts.json", IMBALANCE_FACTORS[0]),
        log:
            result(f"logs/{DATASET['name']}_lists.log"),
        benchmark:
            result(f"benchmarks/{DATASET['name']}_lists.tsv")
        conda:
            "../../envs/bagmar.yaml"
        params:
            name=DATASET["name"],
            code=code("prepare_image_lists.py"),
        script:
            "../../scripts/prepare_image_lists.py"

elif DATASET["name"] == "synthetic":

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
            synthetic=DATASET["synthetic"],
            code=code("make_synthetic.py"),
        script:
            "../../scripts/make_synthetic.py"

else:

    # Named after the data set: cifar100_dataset or cifar10_dataset. Acquisition (local folder or
    # archive, or a download into dataset.root) and md5 verification happen here, before any training.
    # Where the data is found (root, path, download) is read from the config by the script and is not
    # a rerun trigger: every copy that passes the official md5s is the same data. An unofficial copy is.
    rule cifar_dataset:
        name:
            f"{DATASET['name']}_dataset"
        output:
            images=result("data/images.npz"),
            provenance=result("data/provenance.json"),
        log:
            result(f"logs/{DATASET['name']}_dataset.log"),
        benchmark:
            result(f"benchmarks/{DATASET['name']}_dataset.tsv")
        conda:
            "../../envs/bagmar.yaml"
        params:
            name=DATASET["name"],
            unofficial_copy=DATASET.get("unofficial_copy"),
            code=code("prepare_cifar.py"),
        script:
            "../../scripts/prepare_cifar.py"


if not IMAGE_LISTS:

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
            imbalance_factor=lambda w: float(w.imbalance),
            seed=config["split_seed"],
            dataset=DATASET["name"],  # real data sets are checked against the SPEC totals at run time
            code=code("split.py"),
        script:
            "../../scripts/split.py"
