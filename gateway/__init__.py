"""CommerceCore DBX: the HTTP gateway, the CLI and the tools around the database."""

__version__ = "0.1.0"
