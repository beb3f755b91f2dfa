"""Issue 17: the client process of a long-lived cluster does not keep every message it sent."""

import io

import dask

from cluster import ClusterOptions, open_client
from cluster.client import RECENT_MESSAGES


def _logs(client):
    logs = [client.scheduler_comm.recent_message_log]
    scheduler = client.cluster.scheduler
    logs += [comm.recent_message_log for comm in scheduler.stream_comms.values()]
    return logs


def test_send_logs_are_short_on_a_local_cluster():
    """distributed keeps the last 1000 messages of every batched comm (graphs included); ours keep a few."""
    with open_client(ClusterOptions(n_workers=1, processes=False, dashboard_address=None), out=io.StringIO()) as c:
        assert c.submit(sum, [1, 2]).result() == 3
        logs = _logs(c)
        assert len(logs) == 2 and {log.maxlen for log in logs} == {RECENT_MESSAGES}
        for i in range(3 * RECENT_MESSAGES):
            c.submit(sum, [i, 1], key=f"k-{i}").result()
        assert all(len(log) <= RECENT_MESSAGES for log in logs)
    assert dask.config.get("distributed.admin.low-level-log-length") == 1000  # nothing changed for others


def test_a_configured_length_is_kept():
    with dask.config.set({"distributed.admin.low-level-log-length": 7}):
        with open_client(ClusterOptions(n_workers=1, processes=False, dashboard_address=None),
                         out=io.StringIO()) as c:
            assert {log.maxlen for log in _logs(c)} == {7}
