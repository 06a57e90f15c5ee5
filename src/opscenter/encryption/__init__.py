"""Backup encryption keys: the installation's recipient and offline escrow recipients."""
