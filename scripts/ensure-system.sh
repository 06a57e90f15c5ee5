#!/usr/bin/env bash
# Installs the Debian packages the tests use when they are missing (as root), and starts
# the local services they talk to when they are not running. Idempotent and quiet.
set -euo pipefail

need=()
command -v psql >/dev/null || need+=(postgresql-client)
command -v pg_dump >/dev/null || need+=(postgresql-client)
command -v mariadb >/dev/null || need+=(mariadb-client)
command -v zstd >/dev/null || need+=(zstd)
command -v age >/dev/null || need+=(age)
command -v tar >/dev/null || need+=(tar)
command -v wrk >/dev/null || need+=(wrk)  # bench/api.py's load
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v dockerd >/dev/null || need+=(docker.io)
# Validates deploy/compose.yaml without an engine (tests/ops/test_deploy_files.py).
command -v docker-compose >/dev/null || need+=(docker-compose)
# WeasyPrint (reports' PDFs) loads Pango and HarfBuzz; the PDFs embed DejaVu fonts.
ldconfig -p | grep -q 'libpangoft2-1.0.so.0' || need+=(libpango-1.0-0 libpangoft2-1.0-0)
ldconfig -p | grep -q 'libharfbuzz-subset.so.0' || need+=(libharfbuzz-subset0)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing Debian packages (run as root to install): ${need[*]}" >&2
  fi
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432 && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
fi
if ! port_open 3306 && [ -x /usr/sbin/mariadbd ]; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
if ! port_open 6379 && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
# The Docker engine, for the `docker` server type's tests. No systemd here: started by
# hand with the vfs driver and no iptables (the test containers use --network none).
if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  setsid -f dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
    >/var/log/dockerd-ci.log 2>&1 </dev/null || true
  for _ in $(seq 1 30); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
for _ in $(seq 1 30); do
  port_open 5432 && break
  sleep 1
done
port_open 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
