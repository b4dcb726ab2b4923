"""`python -m commercecore.cli`, as the console script."""

from commercecore.cli.main import main

main()
