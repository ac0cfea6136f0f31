# Report: aggregate every evaluation (pandas), render tables and README section (Jinja2), plot.


rule aggregate:
    input:
        sweeps=[path for _, path in RUN.each_evaluation("sweep")],
    output:
        evaluations=result("tables/evaluations.csv"),
        summary=result("tables/summary.csv"),
        table=report(
            result("tables/results.csv"),
            caption="../report/results_table.rst",
            category="Tables",
            labels={"table": "all variants"},
        ),
        comparison=report(
            result("tables/paper_table.csv"),
            caption="../report/paper_table.rst",
            category="Tables",
            labels={"table": "paper format"},
        ),
        methods=report(
            result("tables/methods.csv"),
            caption="../report/methods_table.rst",
            category="Tables",
            labels={"table": "methods"},
        ),
    log:
        result("logs/aggregate.log"),
    benchmark:
        result("benchmarks/aggregate.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("aggregate.py"),
        headline_variant=config["report"]["headline_variant"],
        paper=config["report"].get("paper"),
        published=config["report"].get("published"),
        variants=config["variants"],
        losses=RUN.losses(),
        recipes=RUN.recipe_names(),
    script:
        "../../scripts/aggregate.py"


rule render:
    input:
        table=result("tables/results.csv"),
        comparison=result("tables/paper_table.csv"),
        methods=result("tables/methods.csv"),
        # where real data came from: the tables say so when its official md5 check was skipped
        provenance=(
            [] if RUN.dataset == "synthetic" else result("data/provenance.json")
        ),
        template=str(TEMPLATES / "results.md.j2"),
        # another run's headline figures beside this run's, where that run's results exist (report.compare_with)
        compare=RUN.compared_table(),
    output:
        markdown=result("tables/results.md"),
        readme_section=(
            [result("tables/readme_section.md")] if config["report"]["readme"] else []
        ),
    log:
        result("logs/render.log"),
    benchmark:
        result("benchmarks/render.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("render.py"),
        run_name=config["run_name"],
        dataset=RUN.dataset,
        headline_variant=config["report"]["headline_variant"],
        variants=list(config["variants"]),
        links=RUN.headline_links(),
        readme=config["report"]["readme"],
        section=config["report"]["section"],
        note=config["report"].get("note"),
        headline_model=RUN.headline_model(),
        has_released=bool(LAYOUT.released),
        compare_with=config["report"].get("compare_with"),
        validation=RUN.validation_split,
        no_validation=RUN.no_validation,
    script:
        "../../scripts/render.py"


# Its own job, so that a README without this run's markers never costs the rendered tables: it says so and
# how to add them. The README is not a declared output (Snakemake deletes a failed job's outputs).
rule readme:
    input:
        section=result("tables/readme_section.md"),
    output:
        status=result("tables/readme_status.txt"),
    log:
        result("logs/readme.log"),
    benchmark:
        result("benchmarks/readme.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("readme.py"),
        readme=config["report"]["readme"],
        run_name=config["run_name"],
    script:
        "../../scripts/readme.py"


rule plots:
    input:
        evaluations=result("tables/evaluations.csv"),
        methods=result("tables/methods.csv"),
        per_class=[path for _, path in RUN.each_evaluation("per_class")],
        metrics=[path for _, path in RUN.each_training("metrics")],
        statistics=[path for _, path in RUN.each_training("statistics")],
    output:
        tau_sweep=report(
            result("plots/tau_sweep.png"),
            caption="../report/tau_sweep.rst",
            category="Figures",
        ),
        per_class=report(
            result("plots/per_class.png"),
            caption="../report/per_class.rst",
            category="Figures",
        ),
        curves=report(
            result("plots/training_curves.png"),
            caption="../report/training_curves.rst",
            category="Figures",
        ),
        theta=report(
            result("plots/theta.png"),
            caption="../report/theta.rst",
            category="Figures",
        ),
        methods=report(
            result("plots/methods.png"),
            caption="../report/methods.rst",
            category="Figures",
        ),
        headline_per_class=report(
            result("plots/headline_per_class.png"),
            caption="../report/headline_per_class.rst",
            category="Figures",
        ),
    log:
        result("logs/plots.log"),
    benchmark:
        result("benchmarks/plots.tsv")
    conda:
        "../../envs/bagmar.yaml"
    params:
        **code_params("plots.py"),
        paper=config["report"].get("paper"),
        headline_variant=config["report"]["headline_variant"],
        # each training file's keys, in the inputs' order: the script never parses a path (evaluation
        # files carry their keys as columns)
        metrics_keys=[keys for keys, _ in RUN.each_training("metrics")],
        statistics_keys=[keys for keys, _ in RUN.each_training("statistics")],
    script:
        "../../scripts/plots.py"
