"""The bundled default weights: present, small, loadable by name, with an honest model card."""

from __future__ import annotations

import logging

from brainparc.atlas import ATLAS_FILE, load_atlas
from brainparc.models import DEFAULT_MODELS, load
from brainparc.models.checkpoints import WEIGHTS_DIR, bundled_path


def test_bundled_weights_size_and_names() -> None:
    paths = [bundled_path(name) for name in DEFAULT_MODELS]
    assert all(p.is_file() for p in paths), sorted(WEIGHTS_DIR.glob("*"))
    assert sum(p.stat().st_size for p in [*paths, ATLAS_FILE]) <= 40 * 2**20  # issue 17: atlas + weights ≤ 40 MB
    assert bundled_path("default") == paths[0]


def test_default_loads_with_card_atlas_and_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="brainparc.models"):
        parc, card = load("default")
        strip, strip_card = load("autostrip-lite")
    assert (card["preset"], card["task"], card["source"]) == ("brainparc-atlas", "parc", "bundled")
    assert card["atlas"]["sha256"] == load_atlas().sha256 and parc.atlas.shape[0] == 107
    assert (strip_card["preset"], strip_card["task"]) == ("autostrip-lite", "strip")
    assert not parc.training and not strip.training  # eval mode
    assert card["training"]["steps"] > 0 and "torch" in card["training"]["device"]
    assert card["training"]["config"]["file_list"] == "atlas_synth.csv"  # the run that made them, with its subjects
    assert len(card["training"]["initialised_from"]["sha256"]) == 64  # v2.4 is a fine-tuning of v2.3: its lineage
    assert card["training"]["config"]["coord_noise"] > 0 and card["inference"]["overlap"] == 0.0  # as chosen on dev
    for c in (card, strip_card):
        assert c["dtype"] == "float16" and len(c["sha256"]) == 64
    # preliminary weights say so whenever they are loaded
    assert card.get("status") != "preliminary" or "preliminary weights" in caplog.text
