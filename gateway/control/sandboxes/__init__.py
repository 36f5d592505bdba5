"""Sandboxes as the control plane sees them: their lifecycle (lifecycle.py), the warm pool
(warm.py), commands and files inside them (commands.py), their records (records.py) and the
API's models (schemas.py)."""
