"""TLS settings: one ``distributed.Security`` per client, from Dask config or from files.

Dask reads its TLS settings from ``distributed.comm.tls.*`` (``ca-file``, ``client.cert``,
``client.key``, ``scheduler.cert``/``key``, ``worker.cert``/``key``) and
``distributed.comm.require-encryption``; ``distributed.Security()`` picks them up.  :func:`resolve_security`
builds that object once and :func:`cluster.open_client` hands the same one to the LocalCluster and to
the Client, so both paths use the same certificates.  :func:`check_security` fails early, naming the
config keys to set, instead of letting a TLS handshake time out.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cluster.errors import ClusterConfigError

if TYPE_CHECKING:  # distributed is imported only when a client is really wanted (house rule 8)
    from distributed import Security

__all__ = ["TLS_CONFIG_KEYS", "check_security", "describe_security", "resolve_security", "security_from_files"]

# Security attribute -> Dask config key that fills it.
TLS_CONFIG_KEYS: dict[str, str] = {
    "tls_ca_file": "distributed.comm.tls.ca-file",
    "tls_client_cert": "distributed.comm.tls.client.cert",
    "tls_client_key": "distributed.comm.tls.client.key",
    "tls_scheduler_cert": "distributed.comm.tls.scheduler.cert",
    "tls_scheduler_key": "distributed.comm.tls.scheduler.key",
    "tls_worker_cert": "distributed.comm.tls.worker.cert",
    "tls_worker_key": "distributed.comm.tls.worker.key",
    "require_encryption": "distributed.comm.require-encryption",
}
# Protocols whose connections are TLS and so need a CA and a client certificate.
_TLS_PROTOCOLS = ("tls", "gateway")


def security_from_files(ca_file: str | os.PathLike, cert: str | os.PathLike,
                        key: str | os.PathLike | None = None, *, require_encryption: bool = True) -> Security:
    """A ``distributed.Security`` that uses one certificate for the client, scheduler and worker roles.

    That suits a client of a remote TLS cluster (only the client role is used) and a LocalCluster
    with TLS (all three roles).  The files are checked to exist now, not at the first connection.

    Parameters
    ----------
    ca_file : str or os.PathLike
        PEM file with the CA certificate(s) that signed the cluster's certificates.
    cert : str or os.PathLike
        PEM certificate of this client (it may also hold the key).
    key : str or os.PathLike, optional
        PEM private key, when it is not appended to ``cert``.
    require_encryption : bool, default True
        Refuse plain ``tcp://`` connections.

    Returns
    -------
    distributed.Security

    Raises
    ------
    ClusterConfigError
        ``C003_TLS_CONFIG`` when a file does not exist or is not readable.
    """
    from distributed import Security

    paths = {"ca_file": ca_file, "cert": cert, "key": key}
    checked: dict[str, str | None] = {}
    for name, path in paths.items():
        if path is None:
            checked[name] = None
            continue
        path = os.fspath(path)
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ClusterConfigError(
                "C003_TLS_CONFIG", f"security_from_files: {name}={path!r} is not a readable file",
                hint="pass the PEM files of the cluster's CA and of this client's certificate and key")
        checked[name] = path
    return Security(
        require_encryption=require_encryption,
        tls_ca_file=checked["ca_file"],
        tls_client_cert=checked["cert"], tls_client_key=checked["key"],
        tls_scheduler_cert=checked["cert"], tls_scheduler_key=checked["key"],
        tls_worker_cert=checked["cert"], tls_worker_key=checked["key"],
    )


def resolve_security(security: Security | None = None) -> Security:
    """The explicit ``security``, or ``distributed.Security()`` built from Dask config."""
    from distributed import Security

    if security is None:
        return Security()
    if not isinstance(security, Security):
        raise ClusterConfigError(
            "C001_OPTION_INVALID",
            f"security is a {type(security).__name__}; expected a distributed.Security (see security_from_files)")
    return security


def check_security(security: Security, *, address: str | None) -> None:
    """Fail early when ``security`` cannot work for ``address`` (None = a LocalCluster).

    Raises
    ------
    ClusterConfigError
        ``C003_TLS_CONFIG`` naming the Dask config keys to set.
    """
    protocol = address.split("://", 1)[0] if address else None
    if protocol in _TLS_PROTOCOLS:
        _require(security, ("tls_ca_file", "tls_client_cert"), f"the scheduler address {address} uses TLS",
                 hint="set the keys in a Dask config file (see cluster/examples/dask-config.yaml), or pass "
                      "security=cluster.security_from_files(ca, cert, key)")
    elif protocol is not None and security.require_encryption:
        raise ClusterConfigError(
            "C003_TLS_CONFIG",
            f"Dask config requires encryption ({TLS_CONFIG_KEYS['require_encryption']} is true) but the "
            f"scheduler address {address} is plain TCP",
            hint=f"use the tls:// address of the scheduler, or set {TLS_CONFIG_KEYS['require_encryption']}: false")
    elif protocol is None and security.require_encryption:
        _require(security, ("tls_ca_file", "tls_scheduler_cert", "tls_worker_cert", "tls_client_cert"),
                 f"a LocalCluster with {TLS_CONFIG_KEYS['require_encryption']} true uses TLS",
                 hint="set the keys, pass security=cluster.security_from_files(ca, cert, key), or set "
                      f"{TLS_CONFIG_KEYS['require_encryption']}: false for local runs")
    # Check the files of the roles this process plays: the client only, or all three for a LocalCluster.
    roles = ("client",) if address else ("client", "scheduler", "worker")
    for attr in ("tls_ca_file", *(f"tls_{role}_{part}" for role in roles for part in ("cert", "key"))):
        value = getattr(security, attr, None)
        # A value with a newline is PEM content (Security.temporary, dask-gateway), not a path.
        if value and "\n" not in value and not os.path.isfile(value):
            raise ClusterConfigError(
                "C003_TLS_CONFIG", f"{TLS_CONFIG_KEYS[attr]} is {value!r}, which is not a file",
                hint="fix the path in your Dask config file or DASK_DISTRIBUTED__COMM__TLS__* variable")


def describe_security(security: Security) -> str:
    """One line for messages: which certificates are in use (paths only, never key contents)."""
    def shown(value: str | None) -> str:
        if not value:
            return "none"
        return "<in memory>" if "\n" in value else value

    if not (security.tls_ca_file or security.tls_client_cert):
        return "no TLS certificates" + (" (encryption required)" if security.require_encryption else "")
    return (f"TLS ca-file={shown(security.tls_ca_file)} client cert={shown(security.tls_client_cert)}"
            + (" (encryption required)" if security.require_encryption else ""))


def _require(security: Security, attrs: tuple[str, ...], why: str, *, hint: str) -> None:
    missing = [TLS_CONFIG_KEYS[a] for a in attrs if not getattr(security, a, None)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ClusterConfigError("C003_TLS_CONFIG", f"{why}, but {', '.join(missing)} {verb} not set", hint=hint)
