"""The REST API's routes, one router per resource: ``health`` (/, /healthz, /readyz, /metrics),
``jobs`` (/upload, /status, /jobs, /job), ``downloads`` (/download), ``models`` (/models).
Each route gets the app's ``Services`` as a dependency."""
