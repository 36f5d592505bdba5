"""The audit log: tables (models.py), the batching writer with its spool (writer.py), the
hash chain and its verification (chain.py), queries and export formats (query.py), OTLP and
signed heads (otlp.py, exporters.py)."""
