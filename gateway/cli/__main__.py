"""`python -m gateway.cli`: the `sandgate` command."""

from gateway.cli.main import main

main()
