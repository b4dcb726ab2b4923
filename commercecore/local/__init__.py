"""the embedded PostgreSQL cluster, the dev stack of `commercecore up`, the demo seed."""
