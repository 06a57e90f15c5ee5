"""Byte stores (local directory, S3, SFTP): objects written atomically, read, listed.

No domain logic.
"""
