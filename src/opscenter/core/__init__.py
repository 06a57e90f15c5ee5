"""Shared plumbing: database, errors, schemas, security primitives. Never imports a domain."""
