"""Run segment1b on an HPC batch system with dask-jobqueue (SLURM or PBS).

dask-jobqueue runs the scheduler in *this* process, usually on a login node, and submits batch jobs that
each start several single-threaded workers. This script keeps the scheduler alive while
``segment1b run --scheduler ADDRESS`` does the work, then cancels the jobs.

    python -m pip install dask-jobqueue            # on the login node, next to segment1b
    python hpc-jobqueue.py slurm s3://my-bucket/segment1b/run-42 42
    python hpc-jobqueue.py pbs /shared/segment1b/run-42 42

Adapt queue, account, walltime, cores and memory to your site. ``cores == processes`` gives one thread
per worker, the layout the kernels want. ``memory`` is per job and is split between its processes.
Workers read the data root, so it must be on S3/GCS or on a file system that the compute nodes share.
"""

from __future__ import annotations

import os
import subprocess
import sys

JOBS = 4  # batch jobs; each starts PROCESSES workers
PROCESSES = 16  # worker processes (= cores) per job, one thread each
MEMORY_PER_JOB = "64GiB"  # 4 GiB per worker


def make_cluster(kind: str):
    """A dask-jobqueue cluster; nothing is submitted until ``scale``."""
    # Both: local_directory is expanded on the compute node (fast local disk for spilling). On
    # clusters with a fast interconnect, add interface="ib0" and scheduler_options={"interface": "ib0"}.
    if kind == "slurm":
        from dask_jobqueue import SLURMCluster

        return SLURMCluster(
            queue="compute",
            account="my-project",
            cores=PROCESSES,
            processes=PROCESSES,
            memory=MEMORY_PER_JOB,
            walltime="04:00:00",
            job_extra_directives=["--exclusive"],
            local_directory="$TMPDIR",
            log_directory="dask-jobqueue-logs",
            scheduler_options={"dashboard_address": ":8787"},
        )
    if kind == "pbs":
        from dask_jobqueue import PBSCluster

        return PBSCluster(
            queue="workq",
            account="my-project",
            cores=PROCESSES,
            processes=PROCESSES,
            memory=MEMORY_PER_JOB,
            walltime="04:00:00",
            resource_spec=f"select=1:ncpus={PROCESSES}:mem=64gb",
            local_directory="$TMPDIR",
            log_directory="dask-jobqueue-logs",
            scheduler_options={"dashboard_address": ":8787"},
        )
    raise SystemExit(f"unknown batch system {kind!r}; choose slurm or pbs")


def main(kind: str, data_root: str, seed: str) -> int:
    cluster = make_cluster(kind)
    try:
        print(cluster.job_script())  # review what is submitted
        cluster.scale(jobs=JOBS)
        print(f"scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}", flush=True)
        env = dict(os.environ)
        # Jobs may wait in the queue: let segment1b wait for the first worker instead of failing.
        env.setdefault("DASK_SEGMENT1B__CLUSTER__WORKER_TIMEOUT", "2h")
        command = ["segment1b", "run", "--scheduler", cluster.scheduler_address,
                   "--data-root", data_root, "--seed", seed]
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        cluster.close()  # cancels the batch jobs


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: python hpc-jobqueue.py slurm|pbs DATA_ROOT SEED")
    sys.exit(main(*sys.argv[1:]))
