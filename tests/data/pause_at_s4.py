"""Dask worker preload for tests: pause this worker, through its own memory monitor, when S4 starts.

Loaded with ``DASK_DISTRIBUTED__WORKER__PRELOAD='["<this file>"]'`` by tests/test_reliability.py, so that
the workers of a ``segment1b run`` subprocess stay paused from the first ``s4-…`` task on, as workers
whose memory stays above ``distributed.worker.memory.pause`` do (issue #14: the run hung in S4).
"""

from distributed import WorkerPlugin


class PauseAtS4(WorkerPlugin):
    name = "segment1b-test-pause-at-s4"

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("s4-"):
            memory = self.worker.memory_manager
            memory.memory_pause_fraction = 1e-9  # any process memory is above it: paused until the end
            memory.memory_spill_fraction = memory.memory_target_fraction = False


async def dask_setup(worker):
    await worker.plugin_add(PauseAtS4())
