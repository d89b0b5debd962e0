"""From the command line to the selected T1w images: ``--participant-label``, ``--session-label`` and the example
``--bids-filter-file``s in ``bids_filters/`` go through :func:`build_config` into the pybids query unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainparc.bids.layout import BIDSError, collect_t1w, load_layout
from brainparc.cli.parser import get_parser
from brainparc.cli.run import build_config
from tests.bids.skeleton import make_bids, phantom

FILTERS = Path(__file__).resolve().parents[1] / "bids_filters"
FILES = [
    "sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_run-1_T1w.nii.gz",
    "sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_run-2_T1w.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_T1w.nii.gz",
    "sub-02/anat/sub-02_acq-mprage_run-1_T1w.nii.gz",
    "sub-02/anat/sub-02_T2w.nii.gz",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_bids(tmp_path_factory.mktemp("sel") / "ds", FILES, image=phantom(shape=(4, 4, 4)))


def _selected(dataset: Path, tmp_path: Path, *flags: str) -> list[str]:
    args = get_parser().parse_args([str(dataset), str(tmp_path / "out"), "participant", *flags])
    cfg = build_config(args)
    inputs, _ = collect_t1w(load_layout(dataset), cfg.participant_label, cfg.session_label, cfg.bids_filters)
    return sorted(t.path.name for t in inputs)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], [f.rsplit("/", 1)[1] for f in FILES if f.endswith("_T1w.nii.gz")]),
        (["--participant-label", "sub-02"], ["sub-02_acq-mprage_run-1_T1w.nii.gz"]),
        (["--participant_label", "01", "--session-label", "ses-2"], ["sub-01_ses-2_acq-fast_T1w.nii.gz"]),
        (
            ["--bids-filter-file", str(FILTERS / "session_1.json")],
            ["sub-01_ses-1_acq-mprage_run-1_T1w.nii.gz", "sub-01_ses-1_acq-mprage_run-2_T1w.nii.gz"],
        ),
        (
            ["--bids-filter-file", str(FILTERS / "acq_mprage_run_1.json")],
            ["sub-01_ses-1_acq-mprage_run-1_T1w.nii.gz", "sub-02_acq-mprage_run-1_T1w.nii.gz"],
        ),
        (
            ["--bids-filter-file", str(FILTERS / "acq_mprage_run_1.json"), "--participant-label", "01"],
            ["sub-01_ses-1_acq-mprage_run-1_T1w.nii.gz"],
        ),
        (["--bids-filter-file", str(FILTERS / "t1w_only.json")], [f.rsplit("/", 1)[1] for f in FILES[:4]]),
    ],
)
def test_flags_select(dataset, tmp_path, flags, expected):
    assert _selected(dataset, tmp_path, *flags) == sorted(expected)


def test_session_label_overrides_the_filter_files_session(dataset, tmp_path):
    # as in fMRIPrep: the command-line label wins over a "session" in the filter file
    flags = ["--session-label", "2", "--bids-filter-file", str(FILTERS / "session_1.json")]
    assert _selected(dataset, tmp_path, *flags) == ["sub-01_ses-2_acq-fast_T1w.nii.gz"]


def test_nothing_selected_and_unknown_participant(dataset, tmp_path):
    assert _selected(dataset, tmp_path, "--participant-label", "02", "--session-label", "1") == []
    with pytest.raises(BIDSError, match="99 not found"):
        _selected(dataset, tmp_path, "--participant-label", "99")
