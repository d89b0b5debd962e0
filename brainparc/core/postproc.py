"""Post-processing of parcellations: a deterministic, order-independent version of the reference ``_dk_refine``.

The reference (spec §3.5, §7 item 26) walks 28 cortical labels in a fixed order over a label volume it modifies in
place: for each label with several 26-connected components it keeps the largest and relabels every other component to
the most frequent label on its 6-connected one-voxel outer shell (ignoring background 0, CSF 100 and the label itself).
Because later labels see earlier relabellings, the result depends on the order. Here every decision is taken on the
*input* labels, and the components relabelled for different labels are disjoint, so the order of
``labels_to_refine`` does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

__all__ = ["CSF_INDEX", "REFERENCE_REFINED_LABELS", "fill_brain", "label_csf_shell", "refine_parcels"]

#: BrainParc index of "Cerebrospinal Fluid" (FreeSurfer 24) and the tissue class CSF.
CSF_INDEX, CSF_TISSUE = 100, 1

#: The 28 BrainParc indices the reference refines: precentral … frontal pole (1–14), pars opercularis/orbitalis/
#: triangularis (19–24), superior and inferior parietal (59–62), supramarginal (75–76), lateral occipital (89–90).
REFERENCE_REFINED_LABELS: tuple[int, ...] = (
    *range(1, 15),
    *range(19, 25),
    *range(59, 63),
    75,
    76,
    89,
    90,
)

_CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}


def _grow(box: tuple[slice, ...], shape: tuple[int, ...], by: int = 1) -> tuple[slice, ...]:
    """Grow a bounding box by ``by`` voxels per side, clamped to ``shape``."""
    return tuple(slice(max(0, s.start - by), min(n, s.stop + by)) for s, n in zip(box, shape, strict=True))


def _shell_vote(
    component: np.ndarray, neighbours: np.ndarray, excluded: np.ndarray, first_on_ties: bool = False
) -> int | None:
    """Most frequent label of ``neighbours`` on the 6-connected outer shell of ``component``.

    Ties go to the smallest id, or with ``first_on_ties`` to the label met first in C-order raster scan of the shell
    (the reference's ``Counter`` order).
    """
    shell = ndimage.binary_dilation(component) & ~component  # default structure: the 6-connected cross
    candidates = neighbours[shell]
    candidates = candidates[~np.isin(candidates, excluded)]
    if candidates.size == 0:
        return None
    values, first, counts = np.unique(candidates, return_index=True, return_counts=True)
    winners = np.flatnonzero(counts == counts.max())  # sorted values: winners[0] is the smallest id
    pick = winners[np.argmin(first[winners])] if first_on_ties else winners[0]
    return int(values[pick])


def _refine_one(
    labels: np.ndarray,
    out: np.ndarray,
    label: int,
    box: tuple[slice, ...],
    structure: np.ndarray,
    exclude: np.ndarray,
    sequential: bool = False,
) -> int:
    """Relabel the non-largest components of ``label`` (found in ``labels``) into ``out``; return voxels changed.

    ``sequential`` (``labels is out``): every component with the largest size stays, and each relabelling is seen by
    the next component's vote, as in the reference."""
    crop_box = _grow(box, labels.shape)  # one voxel more so that every component's outer shell is inside the crop
    crop = labels[crop_box]
    components, n = ndimage.label(crop == label, structure=structure)
    if n <= 1:
        return 0
    sizes = np.bincount(components.ravel())[1:]
    keep = set((np.flatnonzero(sizes == sizes.max()) + 1).tolist()) if sequential else {int(np.argmax(sizes)) + 1}
    excluded = np.append(exclude, label)
    changed = 0
    for index, comp_box in enumerate(ndimage.find_objects(components), start=1):
        if index in keep or comp_box is None:
            continue
        local = _grow(comp_box, crop.shape)
        component = components[local] == index
        new = _shell_vote(component, crop[local], excluded, first_on_ties=sequential)
        if new is None:
            continue
        target = out[crop_box][local]  # a view into out
        target[component] = new
        changed += int(sizes[index - 1])
    return changed


def refine_parcels(
    labels: np.ndarray,
    labels_to_refine: Iterable[int] = REFERENCE_REFINED_LABELS,
    connectivity: int = 26,
    exclude: Iterable[int] = (0, 100),
    sequential: bool = False,
) -> np.ndarray:
    """Keep one connected piece per refined label; give stray pieces to their most common neighbour.

    For each label in ``labels_to_refine``, its connected components are found with ``connectivity`` (26 by default,
    as ``skimage.measure.label`` in the reference). The largest stays (ties: first in C-order raster scan). Every other
    component is relabelled to the most frequent label on its one-voxel outer shell, taken with the 6-connected cross
    (scipy's default dilation, as the reference), excluding ``exclude`` (background and CSF by default) and the label
    itself; ties go to the smallest label id. A component with no candidate on its shell is left as it is.

    Unlike the reference, components and shells are read from the *input* labels, never from a partly refined volume,
    so the result does not depend on the order of ``labels_to_refine``. One pass: a relabelled piece whose neighbour
    was itself a stray piece is not chased further.

    ``sequential=True`` is the reference's own algorithm (the ``reference`` recipe): labels in the given order on the
    volume as modified so far, every component of the largest size kept, a vote tie won by the label met first in
    C-order raster scan of the shell.

    Parameters
    ----------
    labels : np.ndarray
        Integer label volume (BrainParc indices, 0–106).
    labels_to_refine : iterable of int
        Labels to clean; default the reference's 28 cortical labels.
    connectivity : {6, 18, 26}
        Neighbourhood defining a label's components.
    exclude : iterable of int
        Labels never used as replacements.
    sequential : bool
        Reference semantics (order-dependent), see above.

    Returns
    -------
    np.ndarray
        A new array of the same dtype.

    Examples
    --------
    >>> vol = np.full((5, 5, 9), 7, dtype=np.int16)
    >>> vol[1:4, 1:4, 1:4] = 1; vol[2, 2, 6] = 1  # a big piece of label 1 and a one-voxel island inside label 7
    >>> out = refine_parcels(vol)
    >>> int(out[2, 2, 6]), int((out == 1).sum())
    (7, 27)
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got {labels.dtype}")
    if connectivity not in _CONNECTIVITY_RANK:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3-D, got shape {labels.shape}")
    structure = ndimage.generate_binary_structure(3, _CONNECTIVITY_RANK[connectivity])
    exclude_arr = np.asarray(sorted(set(exclude)), dtype=np.int64)
    out = labels.copy()
    wanted = sorted({int(v) for v in labels_to_refine if int(v) > 0})
    if not wanted or labels.size == 0:
        return out
    if sequential:
        for label in dict.fromkeys(int(v) for v in labels_to_refine if int(v) > 0):  # the given order
            box = ndimage.find_objects((out == label).astype(np.int8))  # earlier relabellings may have grown it
            if box:
                _refine_one(out, out, label, box[0], structure, exclude_arr, sequential=True)
        return out
    top = max(wanted)
    # find_objects needs non-negative labels; values above the largest wanted label are irrelevant here
    boxes = ndimage.find_objects(np.where((labels > 0) & (labels <= top), labels, 0).astype(np.int32), max_label=top)
    for label in wanted:
        box = boxes[label - 1]
        if box is not None:
            _refine_one(labels, out, label, box, structure, exclude_arr)
    return out


def fill_brain(parc: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Parcels inside the brain ``mask`` everywhere: background voxels in it take the nearest labelled voxel's parcel;
    voxels outside it become background. A brain-mask voxel is brain by definition, so "background" there is an error
    of the network or the prior, and every volume in the tables would miss it.
    """
    parc = np.asarray(parc)
    mask = np.asarray(mask, dtype=bool)
    labelled = (parc > 0) & mask
    out = np.where(mask, parc, 0).astype(parc.dtype)
    holes = mask & ~labelled
    if not holes.any() or not labelled.any():
        return out
    box = tuple(slice(int(ax.min()), int(ax.max()) + 1) for ax in np.nonzero(mask))
    _, nearest = ndimage.distance_transform_edt(~labelled[box], return_indices=True)
    filled = parc[box][tuple(nearest)]
    out[box] = np.where(holes[box], filled, out[box])
    return out


def label_csf_shell(parc: np.ndarray, tissue_probs: np.ndarray, shell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The extra-cerebral CSF shell of a whole head (``core.skullstrip.csf_shell``) labelled CSF.

    The shell lies outside the brain mask the network parcellated, and it is CSF by construction (CSF-like intensity
    between brain and skull), so it gets parcel 100 (FreeSurfer 24) and tissue CSF with probability 1 (``tissue_probs``
    is class-first).
    """
    shell = np.asarray(shell, dtype=bool)
    parc = np.where(shell, CSF_INDEX, parc).astype(np.asarray(parc).dtype)
    probs = np.array(tissue_probs, copy=True)
    probs[:, shell] = 0.0
    probs[CSF_TISSUE, shell] = 1.0
    return parc, probs
