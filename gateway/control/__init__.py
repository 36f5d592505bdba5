"""The control plane, in the main process: sandboxes (lifecycle, warm pool, commands and
files), secrets, policies (store and sync between gateways), tokens and roles, and the
FastAPI application (api/)."""
