"""Run segment1b on a cluster from a dask-gateway server.

    python -m pip install dask-gateway          # where you run this (it registers gateway:// for Dask)
    python dask-gateway.py s3://my-bucket/segment1b/run-42 42

dask-gateway gives every cluster its own self-signed TLS certificate. The certificate lives in memory
(``cluster.security``), and clients reach the scheduler through the gateway's proxy at
``gateway://PROXY:PORT/CLUSTER-NAME``. This script starts a cluster, writes the certificate and key to a
private temporary folder, and hands them to ``segment1b run`` through Dask's environment variables.
``segment1b run`` also needs ``dask-gateway`` installed, because it imports ``dask_gateway`` when an
address uses gateway://. The script stops the cluster at the end.

The gateway address, authentication and cluster options are site-specific. Usually they come from Dask
config (``gateway.address``, ``gateway.auth``) that your platform (JupyterHub, Pangeo) already sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORKERS = 16


def main(data_root: str, seed: str) -> int:
    from dask_gateway import Gateway

    gateway = Gateway()  # address and auth from Dask config (gateway.*)
    options = gateway.cluster_options()  # what this deployment lets you choose
    # e.g. options.worker_cores = 1; options.worker_memory = 6   (names depend on the deployment)
    cluster = gateway.new_cluster(options)
    try:
        cluster.scale(WORKERS)
        print(f"gateway cluster {cluster.name}: dashboard {cluster.dashboard_link}", flush=True)
        with tempfile.TemporaryDirectory(prefix="segment1b-gateway-") as private:
            cert = Path(private, "dask.crt")
            key = Path(private, "dask.pem")
            cert.write_text(cluster.security.tls_cert)  # self-signed: both the CA and the client cert
            key.write_text(cluster.security.tls_key)
            key.chmod(0o600)
            env = dict(os.environ)
            env.update({
                "DASK_SEGMENT1B__CLUSTER__SCHEDULER_ADDRESS": cluster.scheduler_address,
                "DASK_SEGMENT1B__CLUSTER__WORKER_TIMEOUT": "15m",  # the gateway starts workers on demand
                "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
                "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert),
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key),
            })
            # The dashboard link that segment1b prints is the scheduler's own one, inside the
            # gateway's network. Use cluster.dashboard_link (printed above), which goes through the proxy.
            command = ["segment1b", "run", "--data-root", data_root, "--seed", seed]
            return subprocess.run(command, env=env, check=False).returncode
    finally:
        cluster.shutdown()
        gateway.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python dask-gateway.py DATA_ROOT SEED")
    sys.exit(main(*sys.argv[1:]))
