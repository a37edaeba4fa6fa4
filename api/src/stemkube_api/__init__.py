"""stemkube REST API and client."""

__version__ = "0.1.0"
