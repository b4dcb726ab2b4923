"""The DBA's tools: backups and restores, point-in-time recovery, reports and the periodic jobs."""
