"""Export a training checkpoint as bundled weights with its model card (lineage included).

    python scripts/export_weights.py RUN/checkpoints/chk_20.pt OUT.safetensors --status preliminary \
        --inference '{"overlap": 0.25, "cpu_amp": true, "patch_size": 128, "valid_size": 64}' \
        --note "..." [--dev-dice RUN/dev_dice.tsv]

The card holds the run's resolved configuration (``RUN/config.json``), epochs and steps, the loss history, the atlas
the network was trained with (atlas-guided presets), the software versions and the machine, and whatever ``--note``,
``--status`` and ``--inference`` say. Floating tensors are stored as float16 (``brainparc.models.load`` casts back).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from pathlib import Path

import torch

from brainparc import models


def export(checkpoint: Path, out: Path, status: str, inference: dict, note: str, dev_dice: Path | None) -> dict:
    """Write ``out`` from ``checkpoint`` and return the card."""
    run = checkpoint.parent.parent
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = models.build(config["preset"])
    model.load_state_dict(state["model"])
    training = {
        "config": config,
        "epochs": int(state["epoch"]),
        "steps": int(state["step"]),
        "samples": int(state["step"]) * int(config["batch_size"]),
        "history": state.get("history", []),
        "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}",
        "note": note,
    }
    if dev_dice is not None:
        with dev_dice.open(encoding="utf-8") as fh:
            training["dev_dice"] = list(csv.DictReader(fh, delimiter="\t"))
    extra = {"atlas": models.bundled_atlas_entry()} if isinstance(model, models.AtlasGuidedNet) else {}
    defaults = dict(models.PRESETS[config["preset"]].card.get("inference") or {})
    return models.save(
        model,
        out,
        dtype=torch.float16,
        preset=config["preset"],
        status=status,
        inference={**defaults, **inference},
        training=training,
        **extra,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--status", default="preliminary", choices=("preliminary", "final"))
    p.add_argument("--inference", type=json.loads, default={}, help="JSON: inference defaults of the card")
    p.add_argument("--note", default="", help="what a user should know about these weights")
    p.add_argument("--dev-dice", type=Path, default=None, help="TSV of dev Dice per checkpoint to record")
    a = p.parse_args()
    card = export(a.checkpoint, a.out, a.status, a.inference, a.note, a.dev_dice)
    print(f"wrote {a.out} (sha256 {card['sha256'][:12]}, epochs {card['training']['epochs']})")


if __name__ == "__main__":
    main()
