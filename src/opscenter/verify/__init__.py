"""Backup verification: checksum, deep and restore tests, and the recovery-tests view."""
