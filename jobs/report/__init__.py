"""The pictures of a run, read from what it published (issue #10), eagerly and on the client.

* :mod:`jobs.report.map` — ``segment1b map``: where the sites landed, as a PNG;
* :mod:`jobs.report.run_report` — ``segment1b report``: ``run_report.html`` (and what ``segment1b run``
  calls to write it);
* :mod:`jobs.report.run_files` — what both read of a run (identity, run reports, S9 status, polygons, sites).
"""
