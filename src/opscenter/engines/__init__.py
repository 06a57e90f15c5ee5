"""Database engines: client tools, connections, error classification, quoting, probes."""
