"""The gateway's processes and how they talk: serve.py (the main process's composition root),
worker.py (a proxy worker), supervisor.py (starting and replacing workers), hub.py and
hub_client.py (the two ends of protocol.py), authority.py (the shared state), replica.py
(a worker's copy of the registry), api_only.py (`sandgate api`)."""
