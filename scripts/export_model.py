"""Snakemake job: each model of one training group as model.safetensors and its card model.json
(bagmar.models.files)."""
import json

from bagmar.fingerprint import from_params
from bagmar.io import log_to
from bagmar.models.files import export, network_card, sha256

with log_to(snakemake.log[0]):
    with open(snakemake.input.counts) as f:
        counts = json.load(f)
    split_sha256 = sha256(snakemake.input.split)
    validations = snakemake.input.get("val_logits") or [None] * len(snakemake.input.logits)  # a validation list's
    for member, model, logits, val_logits in zip(snakemake.params.members, snakemake.input.models,
                                                 snakemake.input.logits, validations, strict=True):
        about = dict(member["about"])
        about.update(network_card(about["recipe"], about.pop("num_classes"), about.pop("image_lists"),
                                  about.pop("image_size")))
        about.update(split_sha256=split_sha256, code=from_params(snakemake.params, "training_code"))
        outputs = {kind: getattr(snakemake.output, name) for kind, name in member["outputs"].items()}
        card = export(model, logits, counts, outputs["weights"], outputs["card"], about, snakemake.params.taus,
                      val_logits)
        figures = card["figures"]
        print(f"{about['name']}: {outputs['weights']} ({card['weights']['sha256'][:12]}); top-1 plain "
              f"{figures['plain']['top1']:.2f}, PN tau=1 {figures['pn_tau1']['top1']:.2f}, label-free tau "
              f"{figures['label_free_tau']:g} {figures['pn_label_free']['top1']:.2f}"
              + (f", val-selected tau {figures['val_selected_tau']:g} {figures['pn_val_selected']['top1']:.2f}"
                 if "val_selected_tau" in figures else ""))
