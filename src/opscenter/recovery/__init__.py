"""Seed 002's backup & recovery area: recovery points and backup status, views over the
schedules, backups and external jobs (no tables of its own)."""
