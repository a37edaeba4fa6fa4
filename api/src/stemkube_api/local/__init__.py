"""Local mode: the REST API's job backend and object store on one machine with no cluster.

Jobs are rows in SQLite (``records``) run by long-lived ``stemkube-separate --serve`` child
processes, one per worker slot, which keep the model loaded between jobs (``workers``,
``worker_process``); files live under the data directory (``store``). ``rules`` holds the pure
parts: the separator's command lines, which processes are ours, what an exit means, and a row
as the API shows it.
"""
