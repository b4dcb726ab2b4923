"""`commercecore`: the command line (server, embedded PostgreSQL, deployments, DBA tools, payments)."""

from commercecore.cli.main import main

__all__ = ["main"]
