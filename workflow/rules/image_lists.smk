# An image-list data set (ImageNet-LT, Places-LT, iNaturalist 2018, the miniature): its lists give the split.
# Named after the data set (places_lt_lists, ...). Finds each list in dataset.image_list.lists or downloads it,
# verifies it (sha256 or counts) and checks every listed image before any training; training reads the verified
# copies, and the image root from provenance.json.


rule image_lists:
    name:
        f"{RUN.dataset}_lists"
    input:
        miniature=result("data/miniature") if RUN.dataset == "miniature" else [],
    output:
        **{split: result(f"data/lists/{split}.txt") for split in RUN.list_splits},
        provenance=result("data/provenance.json"),
        counts=LAYOUT.split_file("class_counts.json", RUN.imbalance_factors[0]),
    log:
        result(f"logs/{RUN.dataset}_lists.log"),
    benchmark:
        result(f"benchmarks/{RUN.dataset}_lists.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("prepare_image_lists.py"),
        name=RUN.dataset,
    script:
        "../../scripts/prepare_image_lists.py"
