"""pgpipe: a PostgreSQL primary with streaming replicas, from a cluster spec to a verified cluster."""

__version__ = "0.1.0"
