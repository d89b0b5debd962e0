"""refine_parcels: the order-independent reimplementation of the reference _dk_refine (spec §3.5, §9 item 5)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brainparc.core.postproc import REFERENCE_REFINED_LABELS, refine_parcels
from tests.conftest import SHARED_DATA

FULL = np.ones((3, 3, 3), bool)


def n_components(vol: np.ndarray, label: int, structure=FULL) -> int:
    return ndimage.label(vol == label, structure=structure)[1]


def components_per_label(vol: np.ndarray, labels) -> dict[int, int]:
    """26-connected component count of each label, computed on bounding-box crops (fast on 256³)."""
    boxes = ndimage.find_objects(np.where(vol <= max(labels), vol, 0).astype(np.int32))
    return {lab: n_components(vol[boxes[lab - 1]], lab) if boxes[lab - 1] else 0 for lab in labels}


def naive_refine(labels, labels_to_refine, structure=FULL, exclude=(0, 100)):
    """Slow, whole-volume statement of the same semantics (every decision on the input labels)."""
    out = labels.copy()
    for label in labels_to_refine:
        comps, n = ndimage.label(labels == label, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comps.ravel())[1:]
        for index in range(1, n + 1):
            if index == np.argmax(sizes) + 1:
                continue
            comp = comps == index
            shell = ndimage.binary_dilation(comp) & ~comp
            cands = [v for v in labels[shell] if v not in (*exclude, label)]
            if cands:
                values, counts = np.unique(cands, return_counts=True)
                out[comp] = values[np.argmax(counts)]
    return out


def blobs(seed: int, shape=(22, 19, 24)) -> np.ndarray:
    """Random smooth label field over refined and non-refined labels, with many stray pieces."""
    rng = np.random.default_rng(seed)
    choices = np.array([0, 1, 2, 3, 19, 59, 90, 33, 50, 100])
    fields = ndimage.gaussian_filter(rng.normal(size=(len(choices), *shape)), sigma=(0, 1.2, 1.2, 1.2))
    return choices[fields.argmax(0)].astype(np.int16)


def test_stray_piece_goes_to_its_neighbour():
    vol = np.full((12, 12, 12), 50, np.int16)
    vol[:, :, :4] = 0
    vol[1:6, 1:6, 4:9] = 1  # main piece of label 1
    vol[8:10, 8:10, 8:10] = 1  # stray piece inside label 50
    out = refine_parcels(vol)
    assert (out[8:10, 8:10, 8:10] == 50).all()
    assert (out[1:6, 1:6, 4:9] == 1).all()
    assert int((out != vol).sum()) == 8
    assert vol[9, 9, 9] == 1, "the input must not be modified"
    assert out.dtype == vol.dtype


def test_tie_goes_to_smallest_label_and_excluded_neighbours():
    vol = np.zeros((9, 9, 12), np.int16)
    vol[1:4, 1:4, 1:4] = 2  # main piece
    vol[5, 5, 8] = 2  # one-voxel stray piece: 6 shell voxels
    vol[4:7, 4:7, 6:11] = 100  # CSF everywhere around it …
    vol[5, 5, 8] = 2
    vol[4, 5, 8], vol[6, 5, 8] = 30, 30  # … but two voxels of 30
    vol[5, 4, 8], vol[5, 6, 8] = 20, 20  # and two of 20: a tie
    assert refine_parcels(vol)[5, 5, 8] == 20
    vol[5, 4, 8], vol[5, 6, 8], vol[4, 5, 8], vol[6, 5, 8] = 100, 100, 0, 0  # only CSF and background left
    assert refine_parcels(vol)[5, 5, 8] == 2


def test_shell_is_six_connected_and_components_26_connected():
    vol = np.full((10, 10, 10), 60, np.int16)
    vol[1:4, 1:4, 1:4] = 3
    vol[4, 4, 4] = 3  # touches the main piece by a corner only: same component with 26-connectivity
    vol[7, 7, 7] = 3  # stray piece; its diagonal neighbours are 70, its face neighbours 60
    vol[6, 6, 6] = vol[8, 8, 8] = vol[6, 8, 6] = 70
    out = refine_parcels(vol)
    assert out[4, 4, 4] == 3 and out[7, 7, 7] == 60
    out6 = refine_parcels(vol, connectivity=6)
    assert out6[4, 4, 4] == 60, "with 6-connectivity the corner voxel is its own (stray) component"


def test_only_listed_labels_change():
    vol = blobs(0)
    out = refine_parcels(vol, labels_to_refine=(1,))
    changed = out != vol
    assert changed.any() and (vol[changed] == 1).all()
    assert np.array_equal(refine_parcels(vol, labels_to_refine=()), vol)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_whole_volume_statement_and_is_order_independent(seed):
    vol = blobs(seed)
    refined = (1, 2, 3, 19, 59, 90)
    out = refine_parcels(vol, labels_to_refine=refined)
    assert np.array_equal(out, naive_refine(vol, refined))
    rng = np.random.default_rng(seed)
    for _ in range(3):
        assert np.array_equal(refine_parcels(vol, labels_to_refine=tuple(rng.permutation(refined))), out)


def test_bad_arguments():
    with pytest.raises(TypeError):
        refine_parcels(np.zeros((3, 3, 3), np.float32))
    with pytest.raises(ValueError):
        refine_parcels(np.zeros((3, 3, 3), np.int16), connectivity=8)
    with pytest.raises(ValueError):
        refine_parcels(np.zeros((3, 3), np.int16))


def test_reference_label_list():
    assert len(REFERENCE_REFINED_LABELS) == 28
    assert set(REFERENCE_REFINED_LABELS) == {*range(1, 15), *range(19, 25), 59, 60, 61, 62, 75, 76, 89, 90}


@pytest.fixture(scope="module")
def adult_dk() -> np.ndarray:
    """The official sub005 dk-struct output (BrainParc indices), read once per module."""
    nib = pytest.importorskip("nibabel")
    path = SHARED_DATA / "brainparc" / "sub005_adult" / "dk-struct.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return np.asarray(nib.load(path).dataobj).astype(np.int16)


def test_shipped_adult_output_is_a_fixed_point(adult_dk):
    """Spec §9 item 5: the official sub005 output was refined by _dk_refine, so refining again changes ~nothing."""
    dk = adult_dk
    out = refine_parcels(dk)
    changed = int((out != dk).sum())
    print(f"sub005: {changed} of {int((dk > 0).sum())} brain voxels change")  # 0 at the time of writing
    assert changed <= 1e-3 * (dk > 0).sum()
    assert set(components_per_label(out, REFERENCE_REFINED_LABELS).values()) == {1}


def test_shipped_output_with_planted_islands(adult_dk):
    """Islands of refined labels planted inside other regions of the official output are given back."""
    dk = adult_dk
    rng = np.random.default_rng(0)
    planted = dk.copy()
    inside = np.argwhere(np.isin(dk, [91, 92, 33, 34]))  # non-refined regions
    centres = inside[rng.choice(len(inside), 40, replace=False)]
    for (x, y, z), label in zip(centres, rng.choice(REFERENCE_REFINED_LABELS, 40), strict=True):
        planted[x : x + 2, y : y + 2, z : z + 2] = label
    assert max(components_per_label(planted, REFERENCE_REFINED_LABELS).values()) > 1
    out = refine_parcels(planted)
    assert set(components_per_label(out, REFERENCE_REFINED_LABELS).values()) == {1}
    assert (out != dk).mean() < 1e-5


def test_sequential_mode_follows_the_reference_tie_rules():
    """Sequential (reference) mode: equal largest pieces all stay; a vote tie goes to the label met first in raster
    order of the shell (the order-free mode keeps one piece and gives ties to the smallest id)."""
    vol = np.full((7, 7, 15), 50, dtype=np.int16)
    vol[1:3, 1:3, 1:3] = 3  # two equal pieces of label 3
    vol[4:6, 4:6, 4:6] = 3
    assert np.array_equal(refine_parcels(vol, labels_to_refine=[3], sequential=True), vol)
    assert int((refine_parcels(vol, labels_to_refine=[3]) == 3).sum()) == 8
    vol = np.zeros((5, 5, 9), dtype=np.int16)
    vol[:, :, :4], vol[:, :, 5:] = 9, 7
    vol[1:4, 1:4, 0:3] = 1  # the big piece of label 1
    vol[2, 2, 4] = 1  # an island whose shell holds one 9 (z - 1, first in raster order) and one 7 (z + 1)
    assert refine_parcels(vol, labels_to_refine=[1], sequential=True)[2, 2, 4] == 9
    assert refine_parcels(vol, labels_to_refine=[1])[2, 2, 4] == 7


def test_csf_shell_is_labelled_csf():
    from brainparc.core.postproc import CSF_INDEX, label_csf_shell
    from brainparc.labels import dk_struct

    assert dk_struct().freesurfer_ids[CSF_INDEX] == 24
    parc = np.zeros((4, 4, 4), np.int16)
    parc[:2] = 3
    probs = np.full((4, 4, 4, 4), 0.25, np.float32)
    shell = np.zeros((4, 4, 4), bool)
    shell[3] = True
    out, p = label_csf_shell(parc, probs, shell)
    assert (out[3] == CSF_INDEX).all() and (out[:3] == parc[:3]).all()
    assert (p[:, 3] == np.array([0, 1, 0, 0])[:, None, None]).all() and (p[:, :3] == 0.25).all()
    assert (probs == 0.25).all()  # the input is not modified
