# The two set-up commands of the README. Both install what is missing first.
.PHONY: up test bootstrap lint

bootstrap:
	scripts/bootstrap.sh

# Command 1: the gateway and control API on embedded defaults (data dir $$SANDGATE_HOME,
# default /var/lib/sandgate for root).
up: bootstrap
	.venv/bin/sandgate serve --destroy-on-stop

# Command 2: the whole suite: the root-free unit tests first (under a minute), then the
# integration suites (real namespaces, nftables, mitmproxy, runsc). Both on two pytest-xdist
# workers; an integration worker lives in a network namespace of its own, and a test file
# stays on one worker (its fixtures share a gateway per module).
test: bootstrap
	.venv/bin/python -m pytest -m "not integration" -n 2
	.venv/bin/python -m pytest -m integration -n 2 --dist loadfile

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy
