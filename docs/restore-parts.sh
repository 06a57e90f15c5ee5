#!/bin/sh
# Restore a parallel PostgreSQL backup of opscenter (parallel_streams above 1) with
# standard tools only: age, zstd (or gzip), pg_restore. The parts are restored in
# their order: pre-data, the data parts in parallel (one connection each), post-data.
#
# Usage: sh restore-parts.sh FIRST_PART DBNAME [AGE_IDENTITY_FILE]
#   FIRST_PART  the backup's own file, e.g. 20240501T030000Z-1a2b3c4d.dump.zst.age, with
#               its .data-N and .post-data parts beside it (as the download's tar holds
#               them; the manifest beside them lists every part with its sha256).
#   DBNAME      an existing, empty database (createdb DBNAME).
#   AGE_IDENTITY_FILE  default key.txt (`opscenter keys export`); unused if not encrypted.
# Connection: the usual PGHOST, PGPORT, PGUSER, PGPASSWORD.
set -eu
first=$1 db=$2 key=${3:-key.txt}
dir=$(dirname "$first")
name=$(basename "$first")
stem=${name%%.dump*}    # 20240501T030000Z-1a2b3c4d
codec=${name#"$stem"}   # .dump.zst.age

unpack() {  # one part's plain pg_dump archive on stdout
  case $1 in *.age) age -d -i "$key" "$1" ;; *) cat "$1" ;; esac |
    case $1 in *.zst | *.zst.age) zstd -dc ;; *.gz | *.gz.age) gzip -dc ;; *) cat ;; esac
}
restore() {  # each part in one transaction: a part that fails leaves nothing of itself
  unpack "$1" | pg_restore --exit-on-error --single-transaction --dbname="$db"
}

restore "$first"
pids=""
for part in "$dir/$stem".data-*"$codec"; do
  restore "$part" &
  pids="$pids $!"
done
for pid in $pids; do wait "$pid"; done
restore "$dir/$stem.post-data$codec"
echo "restored $stem into $db"
