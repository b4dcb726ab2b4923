#!/usr/bin/env bash
# Restore a logical backup: a thin wrapper over `commercecore db restore` (try --help).
#   db/backups/restore.sh db/backups/out/backup_commercecore_20261124_030000.dump --target-db drill
#   db/backups/restore.sh db/backups/out/backup_commercecore_20261124_030000.sql --force   # a plain dump
#   db/backups/restore.sh FILE --force        # replace the live database (its sessions are terminated)
# The checksum (.sha256 beside the dump) is verified first; a mismatch refuses the restore. A .dump needs
# one; a plain .sql is checked when it has one. Either goes into a staging database, swapped in when complete.
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
exec "$cc" db restore "$@"
