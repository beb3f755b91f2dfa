"""Running one state on a Dask client: readable task keys, largest-first submission, progress, reports.

Every state job follows the same recipe:

1. plan work units on the client (pure functions in ``jobs.units`` / the state module);
2. submit one task per unit with :func:`task_key` names (``s6-jitter-US-003-1a2b3c4d``) so the
   dashboard groups them per state and country, and ``priority`` = cost so the long tail starts first;
   the token is unique per attempt (:func:`token_of`), so two clients on one cluster never share a key;
3. tasks write their part files into the dataset's staging folder (this attempt's, under the lease of
   the work: :mod:`segment1b.lease`) and return small metric dicts with what they wrote;
4. :func:`gather` shows progress, stops at the first contract failure (cancelling the rest) and
   re-raises it with its code;
5. :func:`publish` checks the staging folder holds exactly what the tasks wrote, renames it into place
   (write-once) and the job writes its run report with :func:`write_state_report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from segment1b.contracts import STATE_DATASETS, path_for, report_path
from segment1b.errors import Segment1BError
from segment1b.identity import build_commit, utc_now
from segment1b.storage import StagedFile, Storage, canonical_json

__all__ = ["task_key", "token_of", "gather", "publish", "Timing", "timed", "Workers", "StateReport", "WrittenReport",
           "write_state_report", "has_receipt", "published_receipt", "quiet_contract_failures",
           "release_freed_memory"]

# Task keys of two processes never meet on one cluster: the scheduler would hand one client the other's
# futures, and one client's cancel or release would break the other's (issue 14).
_PROCESS_TOKEN = uuid.uuid4().hex


def token_of(*parts: Any) -> str:
    """Short token for task keys (8 hex chars; ignored by the dashboard's key grouping).

    Unique to this process and ``parts`` (jobs pass their lease's attempt id among them), so a key is never
    shared by two attempts, on one cluster or in one process.
    """
    return hashlib.sha256(canonical_json([_PROCESS_TOKEN, *(str(p) for p in parts)])).hexdigest()[:8]


def task_key(state: str, action: str, country: str | None = None, index: int | None = None,
             token: str = "") -> str:
    """``<state>-<action>[-<ISO>][-<NNN>][-<token>]``, e.g. ``s6-jitter-US-003-1a2b3c4d``.

    The dashboard groups keys by their leading words (``s6-jitter-US``), so each state and country gets
    its own progress bar and the slow countries stand out.
    """
    words = [state, action]
    if country:
        words.append(country)
    if index is not None:
        words.append(f"{index:03d}")
    if token:
        words.append(token)
    return "-".join(words)


@dataclass(frozen=True)
class Timing:
    """Wall and CPU seconds of one task, measured on its own thread by :func:`timed` (contract §11)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0


def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task so its result carries its own wall and CPU seconds.

    A dataclass result with a ``timing`` field comes back with ``timing=Timing(...)``; a dict result (the S9
    and generator tasks) gets the keys ``_wall_s`` and ``_cpu_s``.
    """

    def run(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        result = fn(*args, **kwargs)
        timing = Timing(time.perf_counter() - t0, time.thread_time() - c0)
        if dataclasses.is_dataclass(result):
            return dataclasses.replace(result, timing=timing)
        return {**result, "_wall_s": timing.wall_s, "_cpu_s": timing.cpu_s}

    run.__name__ = getattr(fn, "__name__", "task")
    run.__qualname__ = getattr(fn, "__qualname__", run.__name__)
    run.__doc__ = fn.__doc__
    return run


def gather(client, futures: Mapping[str, Any], label: str, out=None, *, stages: Mapping[str, str] | None = None,
           fetch: set[str] | None = None, show: bool = True) -> dict[str, Any]:
    """Wait for futures with a progress display; return results by key (only keys in ``fetch`` if given,
    so big intermediate results stay on the workers).

    ``stages`` maps keys to a stage name (``s4``, ``s5``...); the display then counts each stage on its own
    (one live line on a terminal, one line per finished stage otherwise).  The first task that fails
    cancels the rest and its exception is raised here (contract failures keep their code and offending
    rows across the worker/client boundary).

    Every state waits here, so this is where a run refuses to hang (issue #14): a
    :class:`cluster.PauseWatchdog` fails the wait with ``C201_WORKERS_PAUSED`` when a worker stays paused
    for ``segment1b.cluster.pause-timeout`` seconds while no task finishes, and a lost scheduler is
    ``C202_SCHEDULER_LOST`` (both :class:`cluster.ClusterRunError`, exit 4).
    """
    from distributed import as_completed

    from cluster import ClusterOptions, PauseWatchdog, scheduler_lost

    results: dict[str, Any] = {}
    if not futures:
        return results
    stage_of = stages or {k: label for k in futures}
    progress = _Progress(label, {k: stage_of[k] for k in futures}, out, show)
    by_future = {f: k for k, f in futures.items()}
    # on a stall the watchdog cancels the futures: that wakes the loop, which raises the watchdog's error
    watchdog = PauseWatchdog(client, lambda: client.cancel(list(futures.values())),
                             timeout=ClusterOptions().pause_timeout)
    try:
        with watchdog:
            for fut in as_completed(list(futures.values())):
                if watchdog.error is not None:
                    raise watchdog.error
                if fut.status == "error":
                    raise fut.exception()
                key = by_future[fut]
                if fetch is None or key in fetch or fut.status == "cancelled":
                    results[key] = fut.result()  # a cancelled future raises here (a lost scheduler: below)
                watchdog.progress()
                progress.finished(key)
    except Exception as error:
        _cancel_quietly(client, futures)
        progress.interrupted()
        lost = scheduler_lost(client, error)
        if lost is not None:
            raise lost from error
        raise
    except BaseException:  # KeyboardInterrupt: cancel, and let it through as it is
        _cancel_quietly(client, futures)
        raise
    return results


class _Progress:
    """What :func:`gather` shows: one live line on a terminal, one line per finished stage otherwise."""

    def __init__(self, label: str, stage_of: dict[str, str], out, show: bool):
        self.label, self.stage_of, self.show = label, stage_of, show
        self.out = out if out is not None else sys.stdout
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.totals: dict[str, int] = defaultdict(int)
        for stage in stage_of.values():
            self.totals[stage] += 1
        self.done: dict[str, int] = defaultdict(int)
        self.count = 0
        self.t0 = self.last = time.perf_counter()

    def finished(self, key: str) -> None:
        """One more task done (the task of ``key``)."""
        self.count += 1
        stage = self.stage_of[key]
        self.done[stage] += 1
        if not self.show:
            return
        now = time.perf_counter()
        every = self.count == len(self.stage_of)
        if self.tty and (now - self.last > 0.2 or every):
            self.last = now
            counts = [(s, self.done[s], n) for s, n in self.totals.items()]
            # the line never reaches the last column (a wrapped line is never redrawn: issue 15); ESC[K clears
            # what a longer previous line left
            line = progress_line(self.label, counts, now - self.t0, shutil.get_terminal_size().columns - 1)
            print(f"\r{line}\x1b[K", end="\n" if every else "", file=self.out, flush=True)
        elif not self.tty and self.done[stage] == self.totals[stage]:
            print(f"  {stage:<22} {self.totals[stage]} tasks done at {now - self.t0:6.1f}s", file=self.out, flush=True)

    def interrupted(self) -> None:
        """End the live line of a wait that failed."""
        if self.show and self.tty:
            print(file=self.out)


def progress_line(label: str, counts: Sequence[tuple[str, int, int]], seconds: float, width: int) -> str:
    """The live progress line of :func:`gather`, at most ``width`` characters (ASCII).

    ``counts`` are (stage, done, total) in display order.  The label is said once: a stage named like
    the label shows its count only, and a stage's leading word that repeats the label is dropped
    (``s9`` ``surface 3/3``).  Too long for ``width``, the line is shortened, always in the same order:
    single spaces; the stage names' words after the first cut to three letters (``s4 wei 12/238``);
    finished stages left out (all finished: one count of tasks); the end cut off (``...``).  The elapsed
    seconds always stay.

    >>> progress_line("s1 tile index", [("s1 tile index", 3, 238)], 1.25, 80)
    '  s1 tile index  3/238  1.2s'
    >>> stages = [("s4 weights", 238, 238), ("s6 units", 1200, 4000), ("s4 write", 0, 130), ("s5 write", 0, 130)]
    >>> progress_line("s4-s6", stages, 12.0, 100)
    '  s4-s6  s4 weights 238/238  s6 units 1200/4000  s4 write 0/130  s5 write 0/130  12.0s'
    >>> progress_line("s4-s6", stages, 12.0, 80)
    '  s4-s6 s4 wei 238/238 s6 uni 1200/4000 s4 wri 0/130 s5 wri 0/130 12.0s'
    >>> progress_line("s4-s6", stages, 12.0, 60)
    '  s4-s6 s6 uni 1200/4000 s4 wri 0/130 s5 wri 0/130 12.0s'
    >>> progress_line("s4-s6", stages, 12.0, 40)
    '  s4-s6 s6 uni 1200/4000 s4 wri... 12.0s'
    """
    elapsed = f"{seconds:.1f}s"
    names = [_stage_name(label, stage) for stage, _, _ in counts]
    short = [_abbreviated(n) for n in names]
    unfinished = [(n, c) for n, c in zip(short, counts) if c[1] < c[2]]
    done, total = sum(c[1] for c in counts), sum(c[2] for c in counts)
    candidates = (("  ", zip(names, counts)), (" ", zip(names, counts)), (" ", zip(short, counts)),
                  (" ", unfinished) if unfinished else (" ", [(f"{len(counts)} stages", ("", done, total))]))
    for sep, shown in candidates:
        line = sep.join([f"  {label}", *(f"{n} {d}/{t}".lstrip() for n, (_, d, t) in shown), elapsed])
        if len(line) <= width:
            return line
    room = width - len(elapsed) - 4  # for "... "
    return line[:room].rstrip() + "... " + elapsed if room > 2 else line[:max(width, 0)]


def _stage_name(label: str, stage: str) -> str:
    if stage == label:
        return ""
    first, _, rest = stage.partition(" ")
    return rest if rest and label == first else stage


def _abbreviated(name: str) -> str:
    first, *rest = name.split(" ")
    return " ".join([first, *(w[:3] for w in rest)])


def _cancel_quietly(client, futures: Mapping[str, Any]) -> None:
    """Cancel the futures of a failed wait (nothing to cancel when the scheduler is gone)."""
    try:
        client.cancel(list(futures.values()))
    except Exception:  # noqa: BLE001 - the wait's own error is the one to report
        pass


def publish(storage: Storage, dataset_id: str, staging_rel: str, *, expected: Iterable[StagedFile],
            **tokens: Any) -> dict[str, str]:
    """Publish a staged partition holding exactly ``expected``; return its determinism receipt
    ``{partition_path, sha256_hex}``."""
    target = path_for(dataset_id, **tokens)
    digest = storage.publish(staging_rel, target, dataset_id, expected=expected)
    return {"partition_path": target, "sha256_hex": digest}


class _ContractFailureFilter(logging.Filter):
    """Drops distributed's "Compute Failed" log of a task that raised a contract failure.

    The failure reaches the client, which prints its code, dataset and rows once (jobs.cli); the worker's
    log of it (Python reprs and ``Traceback:`` lines) would only repeat it, on the same terminal when the
    workers belong to a LocalCluster (issue 14).  Other task errors are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Compute Failed") or not isinstance(record.args, tuple):
            return True
        return not any(_is_contract_failure(a) for a in record.args)


def _is_contract_failure(text: Any) -> bool:
    from segment1b.errors import FAILURE_CODES

    if not isinstance(text, str):
        return False
    names = {c.__name__ for c in _subclasses(Segment1BError)}
    head, _, rest = text.partition("(")
    return head in names and rest[1:].split(":", 1)[0] in FAILURE_CODES


def _subclasses(cls: type) -> list[type]:
    return [cls] + [s for c in cls.__subclasses__() for s in _subclasses(c)]


def _install_filter(dask_worker=None) -> None:
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _ContractFailureFilter) for f in logger.filters):
        logger.addFilter(_ContractFailureFilter())


def quiet_contract_failures(client) -> None:
    """Keep the workers of ``client`` from logging contract failures their tasks raise (the client reports
    them); for LocalClusters, whose workers print on this terminal."""
    client.register_worker_callbacks(setup=_install_filter)  # now, and on workers that join (or restart) later


@dataclass(frozen=True)
class Workers:
    """The cluster side of a run report (contract §11): workers used and their peak RSS (bytes by address)."""

    count: int = 0
    peak_rss_bytes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, client) -> Workers:
        """Measure now, eagerly on every worker (:func:`cluster.worker_memory_peaks`)."""
        from cluster import worker_memory_peaks

        return cls(len(client.scheduler_info().get("workers", {})), worker_memory_peaks(client))


@dataclass
class StateReport:
    """What a state's run report holds (contract §11); ``extra`` carries state-specific counters.

    Jobs build and write it with :func:`write_state_report`.
    """

    state: str
    dataset: str
    identity: dict[str, Any]
    rows: int = 0
    receipts: list[dict[str, str]] = field(default_factory=list)
    wall_seconds: float = 0.0
    task_cpu_seconds: float = 0.0
    workers: int = 0
    peak_worker_rss_bytes: dict[str, int] = field(default_factory=dict)
    countries: list[dict[str, Any]] = field(default_factory=list)
    started_utc: str = field(default_factory=utc_now)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state, "dataset": self.dataset, "identity": self.identity, "rows": self.rows,
            "determinism_receipt": self.receipts, "wall_seconds": round(self.wall_seconds, 4),
            "task_cpu_seconds": round(self.task_cpu_seconds, 4), "workers": self.workers,
            "peak_worker_rss_bytes": self.peak_worker_rss_bytes,
            "peak_worker_rss_max_bytes": max(self.peak_worker_rss_bytes.values(), default=0),
            "countries": self.countries, "started_utc": self.started_utc, "finished_utc": utc_now(),
            "build_commit": build_commit(), **self.extra,
        }


class WrittenReport(NamedTuple):
    """A run report as written: where (relative to the data root) and what."""

    path: str
    data: dict[str, Any]


def write_state_report(storage: Storage, state: str, identity: Mapping[str, Any], *, rows: int,
                       receipts: Iterable[Mapping[str, str]] = (), wall_seconds: float = 0.0,
                       task_cpu_seconds: float = 0.0, workers: Workers = Workers(),
                       countries: Iterable[Mapping[str, Any]] = (), started_utc: str | None = None,
                       extra: Mapping[str, Any] | None = None, path: str | None = None) -> WrittenReport:
    """Write state ``sN``'s run report (contract §11) next to (never inside) its dataset.

    Parameters
    ----------
    state : str
        ``s0`` ... ``s9``; names the dataset (:data:`segment1b.contracts.STATE_DATASETS`).
    identity : mapping
        The report's identity; its tokens (parameter_hash for S1/S2, manifest_fingerprint for S0, seed,
        manifest_fingerprint and parameter_hash otherwise) also place the report (:func:`report_path`).
    rows, receipts, wall_seconds, task_cpu_seconds, workers, countries, started_utc
        The §11 fields: rows emitted, determinism receipts ``{partition_path, sha256_hex}``, wall seconds of
        the state, CPU seconds of its tasks, workers and their peak RSS, per-country rows (in the order
        given), when the state started (default: now).
    extra : mapping, optional
        State-specific counters, appended after the §11 fields.
    path : str, optional
        Write here instead (S9's audit report).

    Returns
    -------
    WrittenReport
        The path written and the report's content.
    """
    report = StateReport(state, STATE_DATASETS[state], dict(identity), rows=rows, receipts=[dict(r) for r in receipts],
                         wall_seconds=wall_seconds, task_cpu_seconds=task_cpu_seconds, workers=workers.count,
                         peak_worker_rss_bytes=dict(workers.peak_rss_bytes), countries=[dict(c) for c in countries],
                         started_utc=started_utc or utc_now(), extra=dict(extra or {}))
    rel = path if path is not None else report_path(state, **identity)
    data = report.to_dict()
    storage.write_json(rel, data)
    return WrittenReport(rel, data)


def published_receipt(storage: Storage, state: str, tokens: Mapping[str, Any], target: str) -> dict[str, str] | None:
    """The determinism receipt for partition ``target`` in state ``sN``'s run report, or None.

    Jobs write the report after publishing, so this is how a resumed run tells a finished state from one
    that was killed between publishing and reporting (S9 needs the receipts: E911 without them).
    """
    rel = report_path(state, **tokens)
    if not storage.exists(rel):
        return None
    try:
        for r in storage.read_json(rel).get("determinism_receipt", []):
            if r.get("partition_path") == target and r.get("sha256_hex"):
                return dict(r)
    except (ValueError, AttributeError, TypeError):  # unreadable: the state is finished again and rewrites it
        return None
    return None


def has_receipt(storage: Storage, state: str, tokens: Mapping[str, Any], target: str) -> bool:
    """True when state ``sN``'s run report holds a receipt for ``target`` (see :func:`published_receipt`)."""
    return published_receipt(storage, state, tokens, target) is not None


def release_freed_memory() -> None:
    """Give the memory a run freed back to the operating system (issue 17: a long-lived client process).

    Arrow's pool (mimalloc) and glibc's arenas keep freed pages for reuse; after a run of a client that
    submits many, about 70 MiB of them are idle.  Best effort: ``malloc_trim`` exists on glibc only.
    """
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
