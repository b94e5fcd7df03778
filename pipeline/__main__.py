"""`python -m pipeline` runs the pgpipe CLI."""

from pipeline.cli import main

main()
