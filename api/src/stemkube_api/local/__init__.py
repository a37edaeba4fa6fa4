"""Local mode: the REST API's job backend and object store on one machine with no cluster.

Jobs are rows in SQLite (``records``) run by ``stemkube-separate`` child processes
(``workers``); files live under the data directory (``store``). ``rules`` holds the pure parts:
the separator's command line, what an exit means, and a row as the API shows it.
"""
