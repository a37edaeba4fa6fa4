"""stemkube client: the ``stemkube`` command line of the REST API."""

__version__ = "0.1.0"
