"""The frozen run configuration built once from the command line, passed explicitly, recorded as TOML."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExecConfig:
    """How nipype runs the workflow."""

    plugin: str = "MultiProc"
    plugin_args: dict[str, Any] = field(default_factory=dict)
    nprocs: int | None = None
    omp_nthreads: int | None = None
    mem_gb: float | None = None
    stop_on_first_crash: bool = False
    write_graph: bool = False
    verbose: int = 0  # -v count: nipype's logs on the console too
    progress: bool = False  # progress bars on stderr (a terminal, no --quiet)


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``brainparc BIDS_DIR OUTPUT_DIR LEVEL`` run needs."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_label: tuple[str, ...] = ()
    session_label: tuple[str, ...] = ()
    bids_filters: dict[str, Any] = field(default_factory=dict)
    bids_database_dir: Path | None = None
    skip_bids_validation: bool = False
    models: tuple[str, ...] = ("default",)
    skull_strip: str = "auto"
    device: str = "auto"
    recipe: str = "auto"
    reports_only: bool = False
    execution: ExecConfig = field(default_factory=ExecConfig)
    run_uuid: str = field(default_factory=lambda: f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}_{uuid.uuid4().hex[:8]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        """A TOML rendering (flat sections ``[run]`` and ``[execution]``; ``None`` values omitted)."""
        data = self.to_dict()
        execution = data.pop("execution")
        return "[run]\n" + _toml_table(data) + "\n[execution]\n" + _toml_table(execution)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_table(data: dict[str, Any]) -> str:
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items() if v is not None)
