"""Public preprocessing API of brainparc (a facade over :mod:`brainparc.core`).

Typical chain, every step a pure function on nibabel images::

    img = load_t1w(path)                       # + validate_t1w: InputError (exit code 3) on bad input
    conformed = conform(img, spacing=1.0)      # LAS, model spacing, cropped to the head; exact inverse
    t1 = bias_correct(conformed.img)           # N4
    strip = strip_skull(t1, mode="auto", refine=autostrip_fn)
    edge = sobel_edges(strip.brain)            # reference int16 Sobel
    x = normalise(np.asarray(strip.brain.dataobj), card["normalisation"], strip.mask.get_fdata())
    ...                                        # network on the LAS arrays
    labels_native = unconform(labels, conformed, order=0)
"""

from __future__ import annotations

from brainparc.core.bias import n4 as bias_correct
from brainparc.core.conform import ConformedImage, GridTransform, choose_spacing, conform, unconform
from brainparc.core.edges import sobel_edges, sobel_edges_array
from brainparc.core.intensity import normalise, zscore_in_mask, zscore_official
from brainparc.core.io import InputError, load_t1w, validate_t1w
from brainparc.core.skullstrip import (
    SkullStripResult,
    finalize_mask,
    is_skull_stripped,
    pseudo_brain,
    pseudo_brain_mask,
    strip_skull,
)

__all__ = [
    "ConformedImage",
    "GridTransform",
    "InputError",
    "SkullStripResult",
    "bias_correct",
    "choose_spacing",
    "conform",
    "finalize_mask",
    "is_skull_stripped",
    "load_t1w",
    "normalise",
    "pseudo_brain",
    "pseudo_brain_mask",
    "sobel_edges",
    "sobel_edges_array",
    "strip_skull",
    "unconform",
    "validate_t1w",
    "zscore_in_mask",
    "zscore_official",
]
