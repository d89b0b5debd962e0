"""Selection logic on BIDS skeletons: sessions, runs, acquisitions, filter files, ``sub-`` prefixes, ages."""

from __future__ import annotations

import json

import pytest

from brainparc.bids.layout import BIDSError, check_bids_dir, collect_t1w, load_filters, load_layout
from tests.bids.skeleton import make_bids

FILES = [
    "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_run-1_T1w.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_run-2_T1w.nii.gz",
    "sub-02/anat/sub-02_T1w.nii.gz",
    "sub-02/anat/sub-02_T2w.nii.gz",
    "sub-03/anat/sub-03_T2w.nii.gz",
]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    from tests.bids.skeleton import phantom

    root = make_bids(
        tmp_path_factory.mktemp("bids") / "ds",
        FILES,
        ages={"sub-01": 0.5, "sub-02": 70},
        session_ages={"sub-01": {"1": 0.25, "2": 0.75}},
        image=phantom(shape=(4, 4, 4)),
    )
    return load_layout(root)


def _names(inputs):
    return sorted(t.path.name for t in inputs)


def test_all_t1w_selected_and_empty_participants_reported(layout):
    inputs, empty = collect_t1w(layout)
    assert len(inputs) == 4 and empty == ["03"]
    assert all(t.path.name.endswith("_T1w.nii.gz") for t in inputs)


@pytest.mark.parametrize(
    ("participants", "sessions", "filters", "expected"),
    [
        (["sub-02"], None, None, ["sub-02_T1w.nii.gz"]),
        (["01"], ["ses-1"], None, ["sub-01_ses-1_T1w.nii.gz"]),
        (["01"], ["2"], None, ["sub-01_ses-2_acq-fast_run-1_T1w.nii.gz", "sub-01_ses-2_acq-fast_run-2_T1w.nii.gz"]),
        (["01"], None, {"run": 2}, ["sub-01_ses-2_acq-fast_run-2_T1w.nii.gz"]),
        (None, None, {"acquisition": "fast", "run": 1}, ["sub-01_ses-2_acq-fast_run-1_T1w.nii.gz"]),
    ],
)
def test_selection(layout, participants, sessions, filters, expected):
    inputs, _ = collect_t1w(layout, participants, sessions, filters)
    assert _names(inputs) == expected


def test_unknown_participant_is_a_clear_error(layout):
    with pytest.raises(BIDSError, match="99 not found"):
        collect_t1w(layout, ["sub-99"])


def test_ages_from_sessions_then_participants(layout):
    inputs, _ = collect_t1w(layout)
    ages = {t.path.name: t.age for t in inputs}
    assert ages["sub-01_ses-1_T1w.nii.gz"] == 0.25
    assert ages["sub-01_ses-2_acq-fast_run-2_T1w.nii.gz"] == 0.75
    assert ages["sub-02_T1w.nii.gz"] == 70.0


def test_keys_are_unique_workflow_names(layout):
    inputs, _ = collect_t1w(layout)
    keys = [t.key for t in inputs]
    assert len(set(keys)) == len(keys)
    assert all(k.replace("_", "").isalnum() for k in keys)


def test_example_filter_files_parse(tmp_path):
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "bids_filters"
    files = sorted(folder.glob("*.json"))
    assert files, "bids_filters/ holds example filter files"
    assert all(isinstance(load_filters(f), dict) for f in files)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"t1w": [1]}))
    with pytest.raises(BIDSError):
        load_filters(bad)


def test_not_a_bids_dir(tmp_path):
    with pytest.raises(BIDSError, match=r"dataset_description\.json"):
        check_bids_dir(tmp_path)
    with pytest.raises(BIDSError, match=r"does not exist"):
        check_bids_dir(tmp_path / "nope")


def test_validation_with_deno_validator(tmp_path):
    import shutil
    import sys
    from pathlib import Path

    from brainparc.bids.layout import validate_bids

    if not (shutil.which("bids-validator-deno") or (Path(sys.executable).parent / "bids-validator-deno").is_file()):
        pytest.skip("bids-validator-deno not installed")
    root = make_bids(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz"])
    assert validate_bids(root) is None
    (root / "sub-01" / "anat" / "sub-01_T1w.nii.gz").rename(root / "sub-01" / "anat" / "sub-01_bogus.nii.gz")
    assert validate_bids(root)  # an error summary


def test_database_dir_outside_the_dataset(tmp_path):
    root = make_bids(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz"])
    db = tmp_path / "work" / "bids_db"
    layout = load_layout(root, db)
    assert collect_t1w(layout)[0] and any(db.iterdir())
    assert sorted(p.name for p in root.iterdir()) == [
        "README",
        "dataset_description.json",
        "participants.tsv",
        "sub-01",
    ]
    assert collect_t1w(load_layout(root, db))[0]  # reused
