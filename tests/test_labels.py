import csv

import numpy as np
import pytest

from brainparc import labels
from tests.conftest import SHARED_DATA, needs_shared_data


def test_dk_struct_table_shape_and_pairs():
    table = labels.dk_struct()
    assert len(table) == 107
    # paired structures 1..96: odd = left, even = right
    for i in range(1, 97):
        assert table[i].name.startswith("Left" if i % 2 else "Right"), table[i]
    assert len(set(table.freesurfer_ids.tolist())) == 107
    assert all(lab.color.startswith("#") and len(lab.color) == 7 for lab in table.labels)


def test_corpus_callosum_reversed_and_tissue_map():
    table = labels.dk_struct()
    assert table.freesurfer_ids[102:107].tolist() == [255, 254, 253, 252, 251]
    assert table[91].tissue == 3 and table[100].tissue == 1 and table[1].tissue == 2


def test_index_freesurfer_round_trip():
    table = labels.dk_struct()
    idx = np.arange(107, dtype=np.int16).reshape(1, 107)
    fs = table.to_freesurfer(idx)
    assert fs[0, 1] == 1024 and fs[0, 36] == 53
    np.testing.assert_array_equal(table.from_freesurfer(fs), idx)
    # unknown FreeSurfer ids become background
    assert table.from_freesurfer(np.array([77, 3000]))[0] == 0
    with pytest.raises(ValueError):
        table.to_freesurfer(np.array([107]))


@needs_shared_data
def test_matches_reference_label_table():
    with open(SHARED_DATA / "brainparc" / "labels.tsv") as fh:
        ref = list(csv.DictReader(fh, delimiter="\t"))
    table = labels.dk_struct()
    for row, lab in zip(ref, table.labels, strict=True):
        assert (int(row["index"]), row["name"], int(row["freesurfer_id"]), int(row["tissue"])) == (
            lab.index,
            lab.name,
            lab.freesurfer_id,
            lab.tissue,
        )


def test_tissue_table():
    assert labels.tissue().names == ["Background", "Cerebrospinal fluid", "Gray matter", "White matter"]
