# Report: aggregate every evaluation (pandas), render the tables and the README section (Jinja2).


rule aggregate:
    input:
        sweeps=expand(
            result("eval/{variant}/imba{imbalance}/seed{seed}/tau_sweep.csv"),
            variant=config["variants"],
            imbalance=IMBALANCE_FACTORS,
            seed=SEEDS,
        ),
        code=package_code("tables"),
    output:
        evaluations=result("tables/evaluations.csv"),
        summary=result("tables/summary.csv"),
        table=result("tables/results.csv"),
    conda:
        "../../envs/bagmar.yaml"
    log:
        result("logs/aggregate.log"),
    benchmark:
        result("benchmarks/aggregate.tsv")
    script:
        "../../scripts/aggregate.py"


rule render:
    input:
        table=result("tables/results.csv"),
        template=str(TEMPLATES / "results.md.j2"),
        code=package_code("render"),
    output:
        markdown=result("tables/results.md"),
    params:
        run_name=config["run_name"],
        dataset=config["dataset"]["name"],
        headline_variant=config["report"]["headline_variant"],
        variants=list(config["variants"]),
        paper=config["report"].get("paper"),
        readme=config["report"]["readme"],
    conda:
        "../../envs/bagmar.yaml"
    log:
        result("logs/render.log"),
    benchmark:
        result("benchmarks/render.tsv")
    script:
        "../../scripts/render.py"
