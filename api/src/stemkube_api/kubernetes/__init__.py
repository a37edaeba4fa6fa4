"""Kubernetes mode: the REST API's job backend and object store in a cluster.

Jobs are SeparationJob custom resources (``backend``), which the operator turns into Jobs; the
API reads them from a watch cache (``watch``). Files live in S3-compatible storage (``store``).
"""
