"""The REST API's routes, one router per resource: ``health`` (/, /healthz, /readyz: open to all),
``jobs`` (/upload, /status, /jobs, /job), ``downloads`` (/download), ``models`` (/models).
Each route gets the app's ``Services`` as a dependency, and every route but health's the
caller (``auth.dependency``)."""
