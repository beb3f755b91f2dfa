"""Create a Dask cluster on Kubernetes from Python (dask-kubernetes operator) and run segment1b on it.

    python -m pip install dask-kubernetes     # where you run this; the operator must be installed
    python kubernetes-kubecluster.py s3://my-bucket/segment1b/run-42 42

``KubeCluster`` creates a ``DaskCluster`` resource and waits for the scheduler. Outside the Kubernetes
cluster it port-forwards the scheduler to localhost, so ``cluster.scheduler_address`` works from here
and from the ``segment1b run`` subprocess, as long as this script keeps running. Leaving the ``with``
block deletes the cluster.

To reuse a cluster made with ``kubernetes-daskcluster.yaml`` instead, pass ``name="segment1b"`` and
``create_mode=CreateMode.CONNECT_ONLY`` (``from dask_kubernetes.operator import CreateMode``), and
``shutdown_on_close=False``.
"""

from __future__ import annotations

import os
import subprocess
import sys

IMAGE = "registry.example.org/segment1b:0.1.0"  # segment1b installed; the same as on this machine
WORKERS = 16


def main(data_root: str, seed: str) -> int:
    from dask_kubernetes.operator import KubeCluster

    with KubeCluster(
        name="segment1b-adhoc",
        image=IMAGE,
        n_workers=WORKERS,
        # One CPU per pod: `dask worker` then starts one thread, and "auto" memory follows the limit.
        resources={"requests": {"cpu": "1", "memory": "6Gi"}, "limits": {"cpu": "1", "memory": "6Gi"}},
        # Credentials for the data root, read by the workers. They end up in the DaskCluster resource,
        # readable by whoever can read it: prefer a ServiceAccount (IRSA, Workload Identity) if you can.
        env={name: os.environ[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
             if name in os.environ},
    ) as cluster:
        print(f"scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}", flush=True)
        command = ["segment1b", "run", "--scheduler", cluster.scheduler_address,
                   "--data-root", data_root, "--seed", seed]
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python kubernetes-kubecluster.py DATA_ROOT SEED")
    sys.exit(main(*sys.argv[1:]))
