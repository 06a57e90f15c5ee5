"""Analytics (seed 002): metrics, trends, predictions and insights computed from the stored
backups, verification runs, incidents, findings and costs; saved custom reports."""
