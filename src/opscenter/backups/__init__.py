"""The backups domain: backup records, the backup job, downloads, catalog import.

The engine it drives is `streaming/`.
"""
