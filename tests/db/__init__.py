"""pgTAP-style tests: assertions about the deployed database, run as the roles a request uses."""
