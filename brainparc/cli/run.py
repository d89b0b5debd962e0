"""Run the BIDS App: guards, selection, the participant workflow, failure summaries, reports, group level."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from brainparc.cli.config import ExecConfig, RunConfig

LOGGER = logging.getLogger("brainparc")


class UsageError(ValueError):
    """A command-line problem (exit code 2)."""


def _inside(path: Path, parent: Path) -> bool:
    path, parent = path.resolve(), parent.resolve()
    return path == parent or parent in path.parents


def build_config(args) -> RunConfig:
    """Check the paths and turn the parsed arguments into a :class:`RunConfig`."""
    from brainparc.bids.layout import load_filters
    from brainparc.cli.logs import show_progress

    bids_dir, output_dir = Path(args.bids_dir).absolute(), Path(args.output_dir).absolute()
    if bids_dir.exists() and _inside(output_dir, bids_dir):
        raise UsageError(
            f"OUTPUT_DIR {output_dir} is BIDS_DIR or inside it; BIDS_DIR is never written to: "
            "choose an output folder outside the dataset (e.g. next to it)"
        )
    work_dir = Path(args.work_dir).absolute() if args.work_dir else output_dir.parent / "brainparc_work"
    if bids_dir.exists() and _inside(work_dir, bids_dir):
        raise UsageError(f"work dir {work_dir} is inside BIDS_DIR; pass -w/--work-dir outside the dataset")
    nprocs = args.nprocs or os.cpu_count() or 1
    omp = args.omp_nthreads or (1 if nprocs == 1 else min(8, nprocs - 1))
    execution = ExecConfig(
        plugin=args.plugin,
        plugin_args=dict(args.plugin_args or {}),
        nprocs=nprocs,
        omp_nthreads=min(omp, nprocs),
        mem_gb=args.mem or args.mem_mb,  # both parsed to GB
        stop_on_first_crash=args.stop_on_first_crash,
        write_graph=args.write_graph,
        verbose=args.verbose,
        progress=show_progress(args.quiet),
    )
    return RunConfig(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=args.analysis_level,
        work_dir=work_dir,
        participant_label=tuple(args.participant_label or ()),
        session_label=tuple(args.session_label or ()),
        bids_filters=load_filters(args.bids_filter_file),
        bids_database_dir=args.bids_database_dir,
        skip_bids_validation=args.skip_bids_validation,
        models=tuple(_absolute(m) for m in args.model or ["default"]),  # the nodes run in their own folders
        skull_strip=args.skull_strip,
        device=args.device,
        recipe=args.recipe,
        reports_only=args.reports_only,
        execution=execution,
    )


def _absolute(model: str) -> str:
    """A ``--model`` that names an existing file, as an absolute path; names (``default``, presets) unchanged."""
    return str(Path(model).absolute()) if Path(model).is_file() else model


def plugin_settings(cfg: RunConfig) -> tuple[str, dict]:
    """nipype plugin name and arguments: MultiProc honours ``--nprocs`` / ``--mem`` and gets a fast poll."""
    ex = cfg.execution
    args = dict(ex.plugin_args)
    if ex.plugin == "MultiProc":
        args.setdefault("n_procs", ex.nprocs)
        if ex.mem_gb:
            args.setdefault("memory_gb", ex.mem_gb)
        # torch may already be loaded in this process (model check): fork-safe workers
        args.setdefault("mp_context", "forkserver")
        args.setdefault("raise_insufficient", False)
        from brainparc.workflows.base import is_gpu_device

        if is_gpu_device(cfg.device):
            # one parcellation per GPU: each GPU node takes one of n_gpu_procs slots. nipype's default is the
            # number of GPUs nvidia-smi lists, which is 0 in containers without nvidia-smi: never let it be 0
            from nipype.utils.gpu_count import gpu_count

            args.setdefault("n_gpu_procs", max(1, gpu_count()))
    return ex.plugin, args


def run_participant(cfg: RunConfig) -> int:
    """Participant level; returns the exit code (1 when any T1w or participant failed)."""
    from brainparc.bids.derivatives import container_from_env, init_derivatives
    from brainparc.bids.layout import BIDSError, check_bids_dir, collect_t1w, load_layout, validate_bids

    check_bids_dir(cfg.bids_dir)
    if not cfg.skip_bids_validation:
        errors = validate_bids(cfg.bids_dir)
        if errors:
            raise BIDSError(f"BIDS validation failed ({errors}); fix the dataset or pass --skip-bids-validation")
    layout = load_layout(cfg.bids_dir, cfg.bids_database_dir)
    t1ws, empty = collect_t1w(layout, cfg.participant_label, cfg.session_label, cfg.bids_filters)
    if not t1ws:
        raise BIDSError("no T1w image matches the selection (participants, sessions, --bids-filter-file)")
    _warn_coarse_voxels(t1ws)
    summary = FailureSummary()
    for sub in empty:
        summary.add("FAILED", sub, "no T1w image found (other participants continue)")
    if not cfg.reports_only:
        _check_models(cfg.models)
        init_derivatives(cfg.output_dir, cfg.bids_dir, container_from_env())
        _write_config(cfg, sorted({t.subject for t in t1ws}))
        for status, sub, detail in _run_workflow(cfg, t1ws):
            summary.add(status, sub, detail)
        summary.write(cfg.output_dir / "logs" / f"failures-{cfg.run_uuid}.txt", n_t1w=len(t1ws))
    _participant_reports(cfg, t1ws, summary.by_subject)
    return 1 if summary.by_subject else 0


def _warn_coarse_voxels(t1ws) -> None:
    """One warning per T1w with thick slices or coarse voxels, from its header (the nodes log theirs to the log
    file only)."""
    import nibabel as nib

    from brainparc.core.io import coarse_voxels_message, voxel_sizes

    for t1w in t1ws:
        try:
            message = coarse_voxels_message(voxel_sizes(nib.load(t1w.path)))
        except Exception:  # unreadable: its node fails and says why
            continue
        if message:
            LOGGER.warning("sub-%s %s: %s", t1w.subject, t1w.path.name, message)


class FailureSummary:
    """One line per failed (or never-run) T1w or participant: printed as it is found, kept for the log file."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.by_subject: dict[str, str] = {}

    def add(self, status: str, subject: str, detail: str) -> None:
        line = f"brainparc: {status} sub-{subject} {detail}"
        print(line, flush=True)
        self.lines.append(line)
        self.by_subject[subject] = "; ".join(filter(None, [self.by_subject.get(subject), detail]))

    def write(self, path: Path, n_t1w: int) -> None:
        """``OUTPUT_DIR/logs/failures-<run>.txt`` (only when something failed) and a closing line on stdout."""
        from brainparc.outputs import write_atomic

        if not self.lines:
            print(f"brainparc: all {n_t1w} T1w images processed", flush=True)
            return
        write_atomic(path, "\n".join(self.lines) + "\n")
        print(f"brainparc: {len(self.lines)} failure(s); one line each in {path}", flush=True)


def _check_models(specs) -> None:
    """Fail early (exit 4) on missing/unreadable weights, before any node runs."""
    from brainparc.pipeline import load_models

    load_models(list(specs))


def _write_config(cfg: RunConfig, subjects: list[str]) -> None:
    from brainparc.outputs import write_atomic

    for sub in subjects:
        write_atomic(cfg.output_dir / f"sub-{sub}" / "log" / cfg.run_uuid / "brainparc.toml", cfg.to_toml())


def _wf_tag(t1w) -> str:
    """The name of a T1w's sub-workflow, as it appears in node names and crash files."""
    return f"single_t1w_{t1w.key}_wf"


class _Completion:
    """Which T1w images ran to the end (every ``ds_*`` sink finished), from nipype's ``status_callback``.

    Needed for ``--stop-on-first-crash``: nipype stops scheduling at the first crash, and the T1w images it never
    finished leave no crash file, so the crash files alone would report them as fine.
    """

    def __init__(self, workflow, t1ws) -> None:
        names = [node.fullname for node in workflow._create_flat_graph().nodes() if node.name.startswith("ds_")]
        self.sinks = {t.key: {n for n in names if f".{_wf_tag(t)}." in n} for t in t1ws}
        self.ended: set[str] = set()

    def __call__(self, node, status: str) -> None:
        if status == "end":
            self.ended.add(node.fullname)

    def done(self, t1w) -> bool:
        return self.sinks[t1w.key] <= self.ended


def write_graph(wf) -> Path | None:
    """``--write-graph``: ``<work dir>/brainparc_wf/graph.svg``; without graphviz's ``dot``, ``graph.dot`` only.

    A missing ``dot`` (or any failure to draw) is one warning line, never a reason to stop the run.
    """
    import shutil

    has_dot = shutil.which("dot") is not None
    folder = Path(wf.base_dir or ".") / wf.name
    try:
        wf.write_graph(graph2use="colored", format="svg" if has_dot else "dot", simple_form=True)
    except Exception as exc:
        LOGGER.warning("--write-graph: could not write the workflow graph (%s); continuing without it", exc)
        return None
    if not has_dot:
        path = folder / "graph.dot"
        LOGGER.warning("--write-graph: graphviz 'dot' not found; wrote %s only (render it with dot -Tsvg)", path)
        return path
    path = folder / "graph.svg"
    if not path.is_file():  # nipype does not check dot's exit status
        LOGGER.warning("--write-graph: dot did not draw %s; continuing without it (the graph is in graph.dot)", path)
        return None
    LOGGER.info("workflow graph: %s", path)
    return path


def _is_graph_plugin(plugin: str) -> bool:
    """Graph plugins (SLURMGraph, SGEGraph, ...) submit the whole graph and return: no status callbacks."""
    from nipype.pipeline import plugins
    from nipype.pipeline.plugins.base import GraphPluginBase

    cls = getattr(plugins, f"{plugin}Plugin", None)
    return isinstance(cls, type) and issubclass(cls, GraphPluginBase)


def _run_workflow(cfg: RunConfig, t1ws) -> list[tuple[str, str, str]]:
    """Build and run the workflow; return ``(status, subject, detail)`` for each T1w that failed or never ran."""
    from brainparc.cli.logs import log_to_file, quiet_multiproc_plugin, route_nipype_logs
    from brainparc.workflows.base import init_brainparc_wf

    logs = cfg.output_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = log_to_file(logs / f"brainparc-{cfg.run_uuid}.log", cfg.execution.verbose)
    route_nipype_logs()
    LOGGER.info("log file: %s", log_file)
    wf = init_brainparc_wf(
        t1ws,
        bids_dir=cfg.bids_dir,
        output_dir=cfg.output_dir,
        work_dir=cfg.work_dir,
        models=cfg.models,
        skull_strip=cfg.skull_strip,
        device=cfg.device,
        recipe=cfg.recipe,
        omp_nthreads=cfg.execution.omp_nthreads or 1,
        progress=cfg.execution.progress,
    )
    wf.config["execution"].update(
        {
            "crashdump_dir": str(logs),
            "crashfile_format": "txt",
            "stop_on_first_crash": cfg.execution.stop_on_first_crash,
            "poll_sleep_duration": 0.05,
            "remove_unnecessary_outputs": False,
        }
    )
    if cfg.execution.write_graph:
        write_graph(wf)
    plugin, plugin_args = plugin_settings(cfg)
    completion = None if _is_graph_plugin(plugin) else _Completion(wf, t1ws)
    if completion is not None:
        plugin_args["status_callback"] = completion
    runner = quiet_multiproc_plugin(plugin_args, log_file, cfg.execution.verbose) if plugin == "MultiProc" else plugin
    start = time.time()
    try:
        wf.run(plugin=runner, plugin_args=plugin_args)
    except Exception as exc:  # node failures: reported per T1w below, from the crash files
        LOGGER.debug("workflow finished with errors: %s", (str(exc).strip().splitlines() or [repr(exc)])[-1])
    crashed = _summarise_crashes(logs, t1ws, since=start)
    results = [("FAILED", t1w.subject, line) for t1w, line in crashed]
    failed = {id(t1w) for t1w, _ in crashed}
    for t1w in t1ws:
        if completion is None or id(t1w) in failed or completion.done(t1w):
            continue
        why = (
            "not processed: the run stopped at the first crash (--stop-on-first-crash)"
            if cfg.execution.stop_on_first_crash
            else "did not complete (no crash file; see the log above)"
        )
        results.append(("NOT RUN", t1w.subject, f"{t1w.path.name}: {why}"))
    return results


def _summarise_crashes(logs: Path, t1ws, since: float) -> list[tuple[object, str]]:
    """``(t1w, one line)`` per failed T1w, from the crash files written during this run."""
    crashes = [p for p in logs.glob("crash-*.txt") if p.stat().st_mtime >= since - 1]
    texts = {crash: crash.read_text(errors="replace") for crash in sorted(crashes)}
    failures = []
    for t1w in t1ws:
        for crash, text in texts.items():
            if _wf_tag(t1w) not in text:
                continue
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
            failures.append((t1w, f"{t1w.path.name}: {last} (crash file: {crash})"))
            break
    return failures


def _participant_reports(cfg: RunConfig, t1ws, failures: dict[str, str]) -> None:
    from brainparc.reports.participant import write_participant_report

    subjects = sorted({t.subject for t in t1ws} | set(failures))
    for sub in subjects:
        try:
            path = write_participant_report(cfg.output_dir, sub, cfg.bids_dir, failures.get(sub))
            LOGGER.info("report: %s", path)
        except Exception as exc:  # a broken report must not hide the processing result
            LOGGER.warning("could not write the report of sub-%s: %s", sub, exc)


def run_group(cfg: RunConfig) -> int:
    """Group level: reads OUTPUT_DIR only."""
    from brainparc.reports.group import run_group_level

    paths = run_group_level(cfg.output_dir, cfg.participant_label)
    print(f"brainparc: group report: {paths['report']}")
    return 0


def run_bids_app(cfg: RunConfig) -> int:
    """Dispatch on the analysis level."""
    if cfg.analysis_level == "group":
        return run_group(replace(cfg))
    return run_participant(cfg)
