"""`python -m gateway.cli`: the `sandgate` command."""

from gateway.cli.quick import main

main()
