"""Export a training checkpoint as bundled weights with its model card (lineage included).

    python scripts/export_weights.py RUN/checkpoints/chk_20.pt OUT.safetensors --status preliminary \
        --inference '{"overlap": 0.25, "cpu_amp": true, "patch_size": 128, "valid_size": 64}' \
        --note "..." [--dev-dice RUN/dev_dice.tsv]
    python scripts/export_weights.py RUN/checkpoints/chk_{90..100}.pt OUT.safetensors ...   # weight average
    python scripts/export_weights.py RUN/checkpoints/chk_{21..25}.pt OUT.safetensors --wise-ft 0.5 \
        --init-weights START.safetensors ...                     # fine-tuned run interpolated with its start

The card holds the run's resolved configuration (``RUN/config.json``), epochs and steps, the loss history, the atlas
the network was trained with (atlas-guided presets), the software versions and the machine, and whatever ``--note``,
``--status`` and ``--inference`` say. Several checkpoints of one run export their weight average
(:func:`brainparc.train.loop.average_checkpoints`; the card lists the averaged epochs). A fine-tuning run (``--init``)
records the weights it started from (``training.initialised_from``: sha256, preset, their training section), read
from ``--init-weights`` (default: the run's ``init`` path; name a saved copy when that file has been replaced since),
and its inference defaults (e.g. the window overlap chosen on the dev subject) unless ``--inference`` overrides them
(they were the preset's, so a fine-tuned v2.3 exported without ``--inference`` ran at overlap 0.25, not 0), and
``--wise-ft ALPHA`` exports ``(1 − ALPHA) · start + ALPHA · fine-tuned``
(:func:`brainparc.train.loop.interpolate_weights`, recorded as ``training.wise_ft_alpha``). Floating tensors are
stored as float16 (``brainparc.models.load`` casts back).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from pathlib import Path

import torch

from brainparc import models
from brainparc.train.loop import average_checkpoints, interpolate_weights


def export(
    checkpoints: list[Path],
    out: Path,
    status: str,
    inference: dict,
    note: str,
    dev_dice: Path | None,
    init_weights: Path | None = None,
    wise_ft: float = 1.0,
) -> dict:
    """Write ``out`` from the checkpoints (one, or several of one run to average) and return the card."""
    runs = {c.resolve().parent.parent for c in checkpoints}
    if len(runs) != 1:
        raise ValueError("checkpoints to average must come from one run")
    config = json.loads((runs.pop() / "config.json").read_text(encoding="utf-8"))
    state = average_checkpoints(checkpoints)
    start = init_weights or config.get("init")
    lineage, start_inference = None, {}
    if start is not None:
        start_model, start_card = models.load(start)
        lineage = {k: start_card.get(k) for k in ("sha256", "preset", "training")}
        start_inference = dict(start_card.get("inference") or {})
        if wise_ft != 1.0:
            state["model"] = interpolate_weights(start_model.state_dict(), state["model"], wise_ft)
    elif wise_ft != 1.0:
        raise ValueError("--wise-ft needs the weights the run started from (--init-weights)")
    model = models.build(config["preset"])
    model.load_state_dict(state["model"])
    training = {
        "config": config,
        "epochs": int(state["epoch"]),
        "steps": int(state["step"]),
        "samples": int(state["step"]) * int(config["batch_size"]),
        **({"averaged_epochs": state["averaged_epochs"]} if len(checkpoints) > 1 else {}),
        **({"initialised_from": lineage} if lineage is not None else {}),
        **({"wise_ft_alpha": wise_ft} if wise_ft != 1.0 else {}),
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
        inference={**defaults, **start_inference, **inference},
        training=training,
        **extra,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, nargs="+", help="one checkpoint, or several of one run to average")
    p.add_argument("out", type=Path)
    p.add_argument("--status", default="preliminary", choices=("preliminary", "final"))
    p.add_argument("--inference", type=json.loads, default={}, help="JSON: inference defaults of the card")
    p.add_argument("--note", default="", help="what a user should know about these weights")
    p.add_argument("--dev-dice", type=Path, default=None, help="TSV of dev Dice per checkpoint to record")
    p.add_argument("--init-weights", type=Path, default=None, help="weights the run started from (default: its init)")
    p.add_argument("--wise-ft", type=float, default=1.0, metavar="ALPHA", help="(1-ALPHA)*start + ALPHA*fine-tuned")
    a = p.parse_args()
    card = export(a.checkpoint, a.out, a.status, a.inference, a.note, a.dev_dice, a.init_weights, a.wise_ft)
    print(f"wrote {a.out} (sha256 {card['sha256'][:12]}, epochs {card['training']['epochs']})")


if __name__ == "__main__":
    main()
