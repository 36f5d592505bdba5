"""`sandgate selftest`: the core of the security suite (tests/security), run against a user's
own policy on their own machine, in a throw-away world of its own. See docs/SECURITY.md."""
