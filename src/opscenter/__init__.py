"""opscenter: a self-hosted ops control center built around trustworthy backups."""

__version__ = "0.1.0"
