"""Credentials the gateway keeps fresh, in the main process: it mints a provider secret's
value (vault.providers) from the provider's configuration, caches it for every proxy worker,
refreshes it shortly before it expires and stores a rotated refresh token back, encrypted.

    transport.py  how token endpoints are reached (vetted like any upstream)
    flows.py      each provider's flow, spoken by a maintained library
    broker.py     one value per secret for all workers: cache, single flight, state, audit
"""
