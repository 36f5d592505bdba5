"""sandgate's gateway: mitmproxy addons, control API, CLI. The Python client of the control
API is `gateway.client.Client`."""
