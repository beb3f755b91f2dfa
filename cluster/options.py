"""Cluster options: one table of defaults, config keys, validators and descriptions.

:class:`ClusterOptions` holds the values that :func:`cluster.open_client` uses.  Constructing it applies
the precedence rule of the project (house rule 7, like ``dask.dataframe``'s ``_set_metadata_task_size``
and like ``distributed.Security``, which also reads Dask config when built):

1. an explicit argument that is not ``None`` (for ``dashboard_address``: any explicit argument);
2. Dask config under ``segment1b.cluster.*`` (YAML files, or ``DASK_SEGMENT1B__CLUSTER__*``
   environment variables, which Dask maps to the same keys);
   for the scheduler only, then Dask's own ``scheduler-address`` key (``DASK_SCHEDULER_ADDRESS``,
   which dask-kubernetes sets in a ``DaskJob`` runner pod);
3. the documented default in :data:`OPTIONS`.

Every value is validated once, here, and a bad value raises :class:`~cluster.errors.ClusterConfigError`
naming the value, where it came from (argument or config key) and what is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from cluster.errors import ClusterConfigError

__all__ = ["CONFIG_PREFIX", "DEFAULT_SCHEDULER_PORT", "FROM_CONFIG", "OPTIONS", "PROTOCOLS", "ClusterOptions",
           "OptionSpec"]

CONFIG_PREFIX = "segment1b.cluster"

# Address protocols that open_client can reach.  "gateway" is registered by the dask-gateway package.
PROTOCOLS: dict[str, str] = {
    "tcp": "plain TCP, tcp://HOST:PORT",
    "tls": "TCP with TLS, tls://HOST:PORT (needs distributed.comm.tls.* certificates)",
    "gateway": "a dask-gateway proxy, gateway://HOST:PORT/CLUSTER-NAME (needs the dask-gateway package)",
}
DEFAULT_SCHEDULER_PORT = 8786

# Spelling of "no dashboard" in config files and environment variables, where None means "not set".
_DISABLED_WORDS = ("false", "none", "off", "no")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")
# The scheduler value that means "start a LocalCluster", whatever the config names.
LOCAL = "local"


# ------------------------------------------------------------------------------------------------
# validators: (value, source) -> normalised value; source names the argument or config key
# ------------------------------------------------------------------------------------------------


def _bad(source: str, value: Any, expected: str) -> ClusterConfigError:
    return ClusterConfigError("C001_OPTION_INVALID", f"{source} is {value!r}; expected {expected}")


def _check_address(value: Any, source: str) -> str | None:
    """``tcp://HOST:PORT``, ``tls://HOST:PORT``, ``gateway://HOST:PORT/NAME``, bare ``HOST[:PORT]`` or ``local``."""
    if value is None:
        return None
    choices = "; ".join(PROTOCOLS.values())
    if not isinstance(value, str) or not value.strip():
        raise _bad(source, value, f"a scheduler address: {choices}; or 'local'")
    text = value.strip()
    if text.lower() == LOCAL:
        return None
    scheme, sep, rest = text.partition("://")
    if not sep:  # bare HOST[:PORT] means TCP, as it does for dask.distributed.Client
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    if scheme not in PROTOCOLS:
        raise ClusterConfigError(
            "C001_OPTION_INVALID",
            f"{source} is {value!r}: protocol {scheme!r} is not supported; "
            f"supported protocols: {', '.join(sorted(PROTOCOLS))} ({choices})",
            hint="UCX and websocket schedulers are not supported here; start the scheduler with "
                 "--protocol tcp or tls")
    if scheme == "gateway":
        hostport, slash, name = rest.partition("/")
        host, port = _split_host_port(hostport, value, source)
        if port is None or not slash or not name.strip("/"):
            raise _bad(source, value, PROTOCOLS["gateway"] + " (as printed by GatewayCluster.scheduler_address)")
        return f"gateway://{host}:{port}/{name.strip('/')}"
    if "/" in rest:
        raise _bad(source, value, f"{PROTOCOLS[scheme]} without a path")
    host, port = _split_host_port(rest, value, source)
    return f"{scheme}://{host}:{port if port is not None else DEFAULT_SCHEDULER_PORT}"


def _split_host_port(text: str, value: Any, source: str) -> tuple[str, int | None]:
    if text.startswith("["):  # [IPv6]:PORT
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise _bad(source, value, "an IPv6 address in brackets, like tls://[::1]:8786")
        host, port_text = f"[{host}]", tail[1:] if tail else ""
    else:
        host, _, port_text = text.partition(":")
    if not host or host == "[]":
        raise _bad(source, value, "an address with a host name or IP, like tcp://scheduler-host:8786")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(source, value, "a port between 1 and 65535, like tcp://scheduler-host:8786")
    return host, int(port_text)


def _check_path(value: Any, source: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _bad(source, value, "a file or folder path (str or os.PathLike)")
    return value


def _check_positive_int(value: Any, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():  # from an environment variable or a CLI
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(source, value, "a whole number >= 1")
    return value


MIN_WORKER_MEMORY = 256 * 2**20


def _check_memory(value: Any, source: str) -> int | None:
    """Bytes as an int, a size string ("4GiB", "500 MB") or "auto"/None for "share of available memory"."""
    from dask.utils import parse_bytes

    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    expected = "a size like '4GiB' or '500MB', a number of bytes > 0, or 'auto'"
    if isinstance(value, bool):
        raise _bad(source, value, expected)
    if isinstance(value, str):
        try:
            value = parse_bytes(value.strip())
        except (ValueError, TypeError):
            raise _bad(source, value, expected) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise _bad(source, value, expected)
    if value < MIN_WORKER_MEMORY:  # below it the nanny kills a worker while it starts: a lost cluster, no message
        raise _bad(source, value, "at least 256 MiB per worker (what a Dask worker process needs to start); "
                   "`segment1b run` refuses too small a limit for its data with the minimum that works")
    return value


def _check_dashboard(value: Any, source: str) -> str | None:
    """``[HOST]:PORT`` (``:0`` = a free port), an int port, or None/False (no dashboard)."""
    expected = ("'[HOST]:PORT' such as ':0' (a free port), ':8787' or '127.0.0.1:8787', a port number, "
                f"or None/False/{'/'.join(_DISABLED_WORDS)} for no dashboard")
    if value is None or value is False:
        return None
    if isinstance(value, bool):
        raise _bad(source, value, expected)
    if isinstance(value, int):
        value = f":{value}"
    if not isinstance(value, str):
        raise _bad(source, value, expected)
    text = value.strip()
    if text.lower() in _DISABLED_WORDS:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or "://" in host:
        raise _bad(source, value, expected)
    return text


def _check_bool(value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise _bad(source, value, f"true or false (or one of {', '.join(_TRUE_WORDS + _FALSE_WORDS)})")


def _check_seconds(value: Any, source: str) -> float:
    from dask.utils import parse_timedelta

    expected = "a duration > 0, in seconds or as a string like '30s' or '2m'"
    if isinstance(value, bool):
        raise _bad(source, value, expected)
    try:
        seconds = parse_timedelta(value, default="seconds")
    except (ValueError, TypeError, KeyError):
        raise _bad(source, value, expected) from None
    if seconds is None or not seconds > 0:
        raise _bad(source, value, expected)
    return float(seconds)


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionSpec:
    """One cluster option: field name, config key, default, validator and description."""

    name: str
    key: str
    default: Any
    validate: Callable[[Any, str], Any]
    description: str

    @property
    def config_key(self) -> str:
        """Full Dask config key, e.g. ``segment1b.cluster.n-workers``."""
        return f"{CONFIG_PREFIX}.{self.key}"

    @property
    def env_var(self) -> str:
        """Environment variable that Dask maps to :attr:`config_key`."""
        return "DASK_" + self.config_key.upper().replace(".", "__").replace("-", "_")


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("scheduler", "scheduler-address", None, _check_address,
               "Address of an existing scheduler (tcp://HOST:PORT, tls://HOST:PORT, gateway://HOST:PORT/NAME; "
               "a bare HOST[:PORT] means tcp, the default port is 8786). None or 'local' starts a LocalCluster."),
    OptionSpec("scheduler_file", "scheduler-file", None, _check_path,
               "JSON file written by `dask scheduler --scheduler-file`; the client waits up to connect-timeout "
               "for it to appear, then connects to the address inside."),
    OptionSpec("n_workers", "n-workers", None, _check_positive_int,
               "LocalCluster worker processes. None: one per usable core (at most 32), fewer if memory "
               "would drop below 2 GiB per worker. Ignored for a remote cluster."),
    OptionSpec("threads_per_worker", "threads-per-worker", 1, _check_positive_int,
               "LocalCluster threads per worker. 1, because the kernels are NumPy/GEOS/Arrow code that "
               "scales by processes. Ignored for a remote cluster."),
    OptionSpec("memory_limit", "memory-limit", None, _check_memory,
               "LocalCluster memory limit per worker ('4GiB', bytes, or 'auto'). None/'auto': available "
               "memory / workers. Ignored for a remote cluster."),
    OptionSpec("dashboard_address", "dashboard-address", ":0", _check_dashboard,
               "LocalCluster dashboard address, '[HOST]:PORT'; ':0' picks a free port. The argument None or "
               "False, or false/'off' in config, disables the dashboard (null in config means not set). "
               "Ignored for a remote cluster."),
    OptionSpec("local_directory", "local-directory", None, _check_path,
               "LocalCluster scratch folder for spilled data. None: Dask's temporary-directory. "
               "Ignored for a remote cluster."),
    OptionSpec("processes", "processes", True, _check_bool,
               "LocalCluster workers as processes (true) or threads of this process (false). "
               "Ignored for a remote cluster."),
    OptionSpec("connect_timeout", "connect-timeout", 30.0, _check_seconds,
               "Seconds to wait for the scheduler (and for the scheduler file to appear)."),
    OptionSpec("worker_timeout", "worker-timeout", 60.0, _check_seconds,
               "Seconds to wait, once connected, for at least one worker."),
    OptionSpec("pause_timeout", "pause-timeout", 60.0, _check_seconds,
               "Seconds a wait on the cluster tolerates a worker that stays paused (its memory above "
               "distributed.worker.memory.pause) while no task finishes; then the job fails with "
               "C201_WORKERS_PAUSED instead of hanging (cluster.PauseWatchdog)."),
)
_SPECS: dict[str, OptionSpec] = {spec.name: spec for spec in OPTIONS}


class _FromConfig:
    """Default of ``dashboard_address``: "not given", because there an explicit None means "disabled"."""

    def __repr__(self) -> str:
        return "<from config or default>"


FROM_CONFIG: Any = _FromConfig()


@dataclass(frozen=True)
class ClusterOptions:
    """How to get a Dask client: a remote scheduler, or the shape of a LocalCluster.

    Every field is resolved on construction as explicit argument > Dask config (``segment1b.cluster.*``,
    also set by ``DASK_SEGMENT1B__CLUSTER__*`` variables) > documented default (:data:`OPTIONS`), then
    validated and normalised: addresses get a protocol and port, sizes become bytes, timeouts seconds.
    ``None`` means "not given", so a CLI can pass its parsed flags straight through; the one exception
    is ``dashboard_address``, where ``None`` (or ``False``) disables the dashboard and leaving the
    argument out means "not given".

    ``scheduler`` and ``scheduler_file`` resolve together: an explicit one of them hides both config
    keys, and ``scheduler="local"`` forces a LocalCluster whatever the config names.  With neither given
    nor configured, Dask's own ``scheduler-address`` key (``DASK_SCHEDULER_ADDRESS``) is used, so a
    dask-kubernetes ``DaskJob`` runner pod finds its cluster without flags.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://``, ``tls://``, ``gateway://``; bare ``HOST[:PORT]`` is
        TCP, port 8786 by default) or ``"local"``.
    scheduler_file : str or os.PathLike, optional
        Scheduler file of an existing cluster. Not together with ``scheduler``.
    n_workers, threads_per_worker : int, optional
        LocalCluster layout; ``n_workers`` unset sizes to the machine, threads default to 1.
    memory_limit : int or str, optional
        LocalCluster memory limit per worker ("4GiB", bytes); unset shares the available memory.
    dashboard_address : str, int, None or False, optional
        LocalCluster dashboard ("[HOST]:PORT", ":0" = a free port, the default); None/False: none.
    local_directory : str or os.PathLike, optional
        LocalCluster scratch folder.
    processes : bool, optional
        LocalCluster workers as processes (default) or threads.
    connect_timeout, worker_timeout : float or str, optional
        Seconds (or "30s", "2m") to wait for the scheduler, then for the first worker.
    pause_timeout : float or str, optional
        Seconds a job waits while a worker stays paused and nothing finishes (then ``C201_WORKERS_PAUSED``).

    Raises
    ------
    ClusterConfigError
        ``C001_OPTION_INVALID`` naming the argument or config key at fault and what it accepts;
        ``C002_OPTION_CONFLICT`` for a scheduler address and a scheduler file at the same level.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"segment1b": {}, "scheduler-address": None}):  # nothing configured
    ...     ClusterOptions(scheduler="scheduler-host").scheduler
    'tcp://scheduler-host:8786'
    >>> with dask.config.set({"segment1b.cluster.n-workers": 3, "segment1b.cluster.memory-limit": "1GiB"}):
    ...     options = ClusterOptions(n_workers=5)
    >>> options.n_workers, options.memory_limit
    (5, 1073741824)
    >>> ClusterOptions(dashboard_address=None).dashboard_address is None
    True
    """

    scheduler: str | None = None
    scheduler_file: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: int | None = None
    dashboard_address: str | None = FROM_CONFIG
    local_directory: str | None = None
    processes: bool | None = None
    connect_timeout: float | None = None
    worker_timeout: float | None = None
    pause_timeout: float | None = None

    def __post_init__(self):
        import dask

        for spec in OPTIONS:
            if spec.name in ("scheduler", "scheduler_file"):
                continue
            given = getattr(self, spec.name)
            # None means "not given", except for the dashboard, where None disables it
            not_given = FROM_CONFIG if spec.name == "dashboard_address" else None
            if given is not not_given:
                value = spec.validate(given, f"argument {spec.name}")
            else:
                configured = dask.config.get(spec.config_key, None)
                if configured is not None:
                    value = spec.validate(configured, f"Dask config {spec.config_key}")
                else:
                    value = spec.default
            object.__setattr__(self, spec.name, value)
        for name, value in _resolve_target(self.scheduler, self.scheduler_file).items():
            object.__setattr__(self, name, value)

    @property
    def is_remote(self) -> bool:
        """True when these options name an existing cluster rather than a LocalCluster."""
        return self.scheduler is not None or self.scheduler_file is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the resolved values, for run reports."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _resolve_target(scheduler: Any, scheduler_file: Any) -> dict[str, Any]:
    """Scheduler address and scheduler file resolve as one unit, so two levels never mix."""
    import dask

    addr_spec, file_spec = _SPECS["scheduler"], _SPECS["scheduler_file"]
    if scheduler is not None or scheduler_file is not None:
        if scheduler is not None and scheduler_file is not None:
            raise _conflict("argument scheduler", scheduler, "argument scheduler_file", scheduler_file)
        return {"scheduler": addr_spec.validate(scheduler, "argument scheduler"),
                "scheduler_file": file_spec.validate(scheduler_file, "argument scheduler_file")}
    address = dask.config.get(addr_spec.config_key, None)
    path = dask.config.get(file_spec.config_key, None)
    if address is not None and path is not None:
        raise _conflict(f"Dask config {addr_spec.config_key}", address, f"Dask config {file_spec.config_key}", path)
    if address is not None or path is not None:
        return {"scheduler": addr_spec.validate(address, f"Dask config {addr_spec.config_key}"),
                "scheduler_file": file_spec.validate(path, f"Dask config {file_spec.config_key}")}
    # Dask's own key; dask-kubernetes sets DASK_SCHEDULER_ADDRESS in a DaskJob's runner pod.
    dask_address = dask.config.get("scheduler-address", None)
    return {"scheduler": addr_spec.validate(dask_address, "Dask config scheduler-address"),
            "scheduler_file": None}


def _conflict(first: str, first_value: Any, second: str, second_value: Any) -> ClusterConfigError:
    return ClusterConfigError(
        "C002_OPTION_CONFLICT",
        f"both {first}={first_value!r} and {second}={second_value!r} are set; they name the cluster in two "
        "different ways",
        hint="give either a scheduler address or a scheduler file, not both")
