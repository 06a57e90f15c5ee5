"""External backup jobs: scripts that back up elsewhere report here (seed 000's legacy API)."""
