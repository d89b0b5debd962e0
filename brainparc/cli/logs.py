"""What the command line prints, and where the rest goes.

Console (stderr): brainparc's own messages (``-q``: warnings and errors only), other libraries' warnings, each
warning once per process; nipype's node logs and tracebacks only with ``-v``. The BIDS App also writes everything
(nipype's logs, tracebacks, warnings, debug with ``-vv``) to ``OUTPUT_DIR/logs/brainparc-<run>.log``; its workers
(:class:`QuietMultiProcPlugin`) log to that file only, so a failing node leaves its traceback in the crash file and
the log file while the console gets the one ``brainparc: FAILED ...`` line. Progress bars (tqdm, stderr) are shown
when stderr is a terminal and ``-q`` is not given (:func:`show_progress`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: Marks the handlers installed here, so that a second call (tests, the demo's two levels) replaces them.
_OURS = "_brainparc_handler"


class _Stderr(logging.StreamHandler):
    """A stream handler that writes to the current ``sys.stderr`` (pytest swaps it between tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


class OnceFilter(logging.Filter):
    """Lets each distinct warning (or error) message through once; other levels pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _ConsoleFilter(logging.Filter):
    """Which records reach the console: see the module docstring."""

    def __init__(self, verbose: int, quiet: bool) -> None:
        super().__init__()
        self.verbose, self.quiet = verbose, quiet

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "nipype" or record.name.startswith("nipype."):
            return self.verbose > 0
        if self.verbose:
            return True
        if record.name == "brainparc" or record.name.startswith("brainparc."):
            return record.levelno >= (logging.WARNING if self.quiet else logging.INFO)
        return record.levelno >= logging.WARNING


class _ConsoleFormatter(logging.Formatter):
    """``brainparc: message`` / ``brainparc: warning: message``; timestamps and logger names with ``-v``."""

    def __init__(self, verbose: int) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s: %(message)s" if verbose else None)
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose:
            return super().format(record)
        text = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"brainparc: {level}{text}"


def route_nipype_logs() -> None:
    """nipype's loggers go through the root logger (the handlers here) instead of nipype's own stdout handler."""
    import nipype  # noqa: F401  (importing it installs its handler, which is removed next)

    nipype_logger = logging.getLogger("nipype")
    for handler in list(nipype_logger.handlers):
        nipype_logger.removeHandler(handler)
    for name in ("nipype", "nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip"):
        logging.getLogger(name).propagate = True


def _remove_ours(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _OURS, False):
            logger.removeHandler(handler)
            handler.close()


_once = OnceFilter()


def setup_logging(verbose: int = 0, quiet: bool = False, keep_seen: bool = False) -> None:
    """Console logging of one command (replaces what an earlier call installed).

    ``keep_seen``: warnings already shown stay hidden (a command run inside another one, as the demo runs the App).
    """
    global _once
    if not keep_seen:
        _once = OnceFilter()
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # no telemetry call from nipype
    root = logging.getLogger()
    _remove_ours(root)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    console = _Stderr()
    setattr(console, _OURS, True)
    console.addFilter(_ConsoleFilter(verbose, quiet))
    console.addFilter(_once)
    console.setFormatter(_ConsoleFormatter(verbose))
    root.addHandler(console)
    logging.captureWarnings(True)  # Python warnings: through the same handlers, once each
    if "nipype" in sys.modules:  # else the App calls route_nipype_logs() once it imports nipype
        route_nipype_logs()


def log_to_file(path: Path, verbose: int = 0) -> Path:
    """Also write every record (INFO, DEBUG with ``-vv``; tracebacks included) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    setattr(handler, _OURS, True)
    handler.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return path


def show_progress(quiet: bool) -> bool:
    """Progress bars only on a terminal and without ``--quiet``."""
    return not quiet and sys.stderr.isatty()


def init_worker(cwd: str, log_file: str, verbose: int) -> None:
    """Initialiser of the App's worker processes: nipype's own set-up, then logs to ``log_file`` only (and the
    console with ``-v``)."""
    from nipype.pipeline.plugins.multiproc import process_initializer

    process_initializer(cwd)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if verbose:
        setup_logging(verbose)
    else:
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        route_nipype_logs()
    log_to_file(Path(log_file), verbose)


def quiet_multiproc_plugin(plugin_args: dict, log_file: Path, verbose: int):
    """nipype's MultiProc plugin whose workers start with :func:`init_worker` (the same scheduling otherwise)."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial
    from multiprocessing import get_context

    from nipype.pipeline.plugins.multiproc import MultiProcPlugin

    plugin = MultiProcPlugin(plugin_args=plugin_args)
    plugin.pool.shutdown(wait=True)  # no worker started yet: nipype's pool is replaced before any job
    plugin.pool = ProcessPoolExecutor(
        max_workers=plugin.processors,
        initializer=partial(init_worker, log_file=str(log_file), verbose=verbose),
        initargs=(plugin._cwd,),
        mp_context=get_context(plugin_args.get("mp_context")),
    )
    return plugin
