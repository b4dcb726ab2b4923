"""The HTTP gateway of CommerceCore DBX: requests in, SQL function calls under the caller's role, JSON out.

Only what serves HTTP lives here; the command line and the tools around the database are `commercecore`,
which imports this package (for `serve`) and is never imported by it."""

__version__ = "0.1.0"
