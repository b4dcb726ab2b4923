#!/usr/bin/env bash
# Logical backup of the project database: a thin wrapper over `commercecore db backup` (try --help).
#   db/backups/backup.sh                      # -> db/backups/out/backup_<db>_<YYYYmmdd_HHMMSS>.dump + .sha256
#   db/backups/backup.sh --plain --keep 14    # also a plain .sql; keep the newest 14 backups
# It prints the full path of every file it wrote.
# cron:  15 3 * * *  /srv/commercecore/db/backups/backup.sh --keep 14
# Connects to $DATABASE_URL, else to the embedded cluster under .data/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cc="$root/.venv/bin/commercecore"
if [ ! -x "$cc" ]; then
  cc="$(command -v commercecore || true)"
fi
if [ -z "$cc" ]; then
  echo "error: commercecore is not installed (run: make install)" >&2
  exit 1
fi
exec "$cc" db backup "$@"
