"""Real Dask clusters for tests: ``dask scheduler`` / ``dask worker`` subprocesses and self-signed TLS.

Shared by ``test_cluster.py`` (the cluster package) and ``test_end_to_end.py`` (the whole pipeline on
those clusters).  Every process binds 127.0.0.1, runs in its own session (so a stuck worker and its
nanny child can be killed together) and logs to a file in the test's folder; :meth:`Processes.stop`
ends them, killing what hangs.

No process outlives the test session, however it ends (issue 15, item 10): each one is started with
:func:`die_with_parent` (the kernel kills it when pytest dies, even by SIGKILL or a timeout's
``os._exit``; a worker's own worker process follows its nanny), and what is still running when pytest
exits normally (Ctrl-C included) is killed by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import ctypes
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

__all__ = ["REPO_ROOT", "START_TIMEOUT", "Processes", "dask_cli", "die_with_parent", "make_pki", "start_cluster",
           "tls_config", "repo_env", "wait_for_workers"]

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60  # seconds for a subprocess scheduler/worker to come up on a busy 2-core machine

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_TEST_PROCESS = os.getpid()


def die_with_parent() -> None:
    """``preexec_fn`` for test subprocesses: the kernel sends SIGKILL to the child when the test process
    dies, however it dies (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing).

    Runs in the child between fork and exec; a parent that died before the call is caught by comparing
    the parent's pid.
    """
    if _LIBC is None:
        return
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _TEST_PROCESS:
        os.kill(os.getpid(), signal.SIGKILL)


_LIVE: list[Processes] = []


@atexit.register
def _kill_what_is_left() -> None:
    """pytest ending (a Ctrl-C included) with a cluster still running: kill its process groups."""
    for procs in list(_LIVE):
        procs.kill()


def group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of group ``pgid`` is left (True), or ``timeout`` seconds (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def repo_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for subprocesses that import this checkout (jobs, segment1b, cluster), as an installed
    distribution would provide: the repository first on PYTHONPATH, no inherited scheduler address."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def dask_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dask", *args]


class Processes:
    """A scheduler, then workers, as subprocesses with logs; stop() ends them and kills what hangs."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        # Workers import cluster.memory for the memory probes and the jobs' task functions, as an
        # installed segment1b would provide.
        self.env = repo_env()

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        with open(log, "wb") as handle:
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.folder, start_new_session=True, preexec_fn=die_with_parent)
        self.procs.append((proc, log))
        if self not in _LIVE:
            _LIVE.append(self)
        return proc

    def wait_for_file(self, path: Path, timeout: float = START_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc, log in self.procs:
                if proc.poll() is not None:
                    pytest.fail(f"{log.name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                info = json.loads(path.read_text())
                if info.get("address"):
                    return info
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        pytest.fail(f"{path} did not appear within {timeout} s:\n" + self.logs())

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for _, log in self.procs)

    def stop(self) -> None:
        """Workers first, then the scheduler: a worker whose scheduler vanished waits on its comms."""
        first, rest = self.procs[:1], self.procs[1:]
        for group in (rest, first):
            for proc, _ in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc, _ in group:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)  # the session we created: worker and nanny child
                    proc.wait(timeout=5)
        if self in _LIVE:
            _LIVE.remove(self)

    def kill(self) -> None:
        """SIGKILL every process group started here, without waiting (what pytest's exit leaves running)."""
        for proc, _ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self in _LIVE:
            _LIVE.remove(self)


def start_cluster(folder: Path, *, n_workers: int, tls: dict[str, Path] | None = None,
                  memory_limit: str = "1GiB") -> tuple[Processes, Path, str]:
    """Start ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Returns the processes, the scheduler file and the scheduler address (``tcp://`` or, with ``tls``
    certificates from :func:`make_pki`, ``tls://``).  The workers may still be joining: clients wait.
    """
    procs = Processes(folder)
    scheduler_file = folder / "scheduler.json"
    tls_args: list[str] = []
    if tls:
        tls_args = ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"])]
    try:
        procs.start("scheduler", dask_cli(
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--protocol", "tls" if tls else "tcp",
            "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file),
            "--idle-timeout", "600s", *tls_args))  # idle-timeout: a safety net if the test run is killed
        info = procs.wait_for_file(scheduler_file)
        for i in range(n_workers):
            procs.start(f"worker-{i}", dask_cli(
                "worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--name", f"w{i}",
                "--nthreads", "1", "--memory-limit", memory_limit, "--no-dashboard", "--death-timeout", "60",
                *tls_args))
    except BaseException:
        procs.stop()
        raise
    return procs, scheduler_file, info["address"]


def wait_for_workers(address: str, n_workers: int, *, tls: dict[str, Path] | None = None,
                     timeout: float = START_TIMEOUT) -> None:
    """Block until ``n_workers`` workers have joined the scheduler at ``address``."""
    from distributed import Client

    security = None
    if tls:
        from cluster import security_from_files

        security = security_from_files(tls["ca"], tls["cert"], tls["key"])
    with Client(address, security=security, timeout=timeout) as client:
        client.wait_for_workers(n_workers, timeout=timeout)


def make_pki(folder: Path, name: str) -> dict[str, Path]:
    """A self-signed CA and a certificate it signs for 127.0.0.1/localhost (client and server use)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} dask")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / f"{name}-ca.pem", "cert": folder / f"{name}-cert.pem", "key": folder / f"{name}-key.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


def tls_config(pki: dict[str, Path]) -> dict[str, str]:
    """The client-side Dask config keys for the certificates of :func:`make_pki`.

    Keys under "distributed." given to dask.config.set before distributed is first imported would, on
    leaving the block, remove distributed's whole default config: import distributed first.
    """
    return {"distributed.comm.tls.ca-file": str(pki["ca"]),
            "distributed.comm.tls.client.cert": str(pki["cert"]),
            "distributed.comm.tls.client.key": str(pki["key"])}
