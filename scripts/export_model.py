"""Snakemake job: one training's model as model.safetensors and its card model.json (bagmar.models.files)."""
import json

from bagmar.io import log_to
from bagmar.models.files import export, network_card, sha256

with log_to(snakemake.log[0]):
    about = dict(snakemake.params.about)
    with open(snakemake.input.counts) as f:
        counts = json.load(f)
    about.update(network_card(about["recipe"], about.pop("num_classes"), about.pop("image_lists"),
                              about.pop("image_size")))
    about["split_sha256"] = sha256(snakemake.input.split)
    about["code"] = snakemake.params.training_code
    card = export(snakemake.input.model, snakemake.input.logits, counts, snakemake.output.weights,
                  snakemake.output.card, about, snakemake.params.taus)
    figures = card["figures"]
    print(f"{about['name']}: "
          f"{snakemake.output.weights} ({card['weights']['sha256'][:12]}); top-1 plain {figures['plain']['top1']:.2f}, "
          f"PN tau=1 {figures['pn_tau1']['top1']:.2f}, label-free tau {figures['label_free_tau']:g} "
          f"{figures['pn_label_free']['top1']:.2f}")
