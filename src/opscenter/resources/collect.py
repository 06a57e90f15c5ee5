"""What a collection round reads: this host through psutil, a host without an agent
through one remote command (`/proc` and `df`) over its own transport, a database server
through its own statistics, and a storage provider's space."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import psutil

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.mysql import mysql_client_command, resolve_mysql_tool
from opscenter.engines.postgres import PG_BIN_GLOBS, find_psql, psql_command
from opscenter.remote.runner import Command, CommandRunner
from opscenter.resources.store import Sample
from opscenter.servers.connect import MYSQL_DATABASES_SQL, PG_DATABASES_SQL, Target

#: Pseudo and in-memory file systems: not disks anybody fills.
_NOT_DISKS = {"tmpfs", "devtmpfs", "udev", "shm", "none", "proc", "sysfs", "cgroup", "cgroup2"}
_NOT_DISK_MOUNTS = ("/proc", "/sys", "/dev", "/run")


def disk_samples(mount: str, total: float, used: float) -> list[Sample]:
    percent = 100.0 * used / total if total else 0.0
    return [
        Sample("disk_total_bytes", total, mount),
        Sample("disk_used_bytes", used, mount),
        Sample("disk_used_percent", round(percent, 3), mount),
    ]


@dataclass
class Counters:
    """The previous reading of cumulative counters, to turn them into rates."""

    at: float = 0.0
    cpu_busy: float = 0.0
    cpu_total: float = 0.0
    rx: float = 0.0
    tx: float = 0.0

    def rates(self, at: float, busy: float, total: float, rx: float, tx: float) -> list[Sample]:
        out: list[Sample] = []
        if self.at and total > self.cpu_total:
            out.append(
                Sample(
                    "cpu_percent",
                    round(100.0 * (busy - self.cpu_busy) / (total - self.cpu_total), 3),
                )
            )
        if self.at and at > self.at and rx >= self.rx and tx >= self.tx:
            out.append(Sample("net_rx_bytes_per_second", round((rx - self.rx) / (at - self.at), 3)))
            out.append(Sample("net_tx_bytes_per_second", round((tx - self.tx) / (at - self.at), 3)))
        self.at, self.cpu_busy, self.cpu_total, self.rx, self.tx = at, busy, total, rx, tx
        return out


@dataclass
class HostCollector:
    """This host, through psutil (the same numbers `free`, `df` and `uptime` show)."""

    counters: Counters = field(default_factory=Counters)

    def collect(self) -> list[Sample]:
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        load = os.getloadavg()
        out = [
            Sample("load_1", load[0]),
            Sample("load_5", load[1]),
            Sample("load_15", load[2]),
            Sample("memory_total_bytes", float(vm.total)),
            Sample("memory_used_bytes", float(vm.total - vm.available)),
            Sample("memory_used_percent", round(100.0 * (vm.total - vm.available) / vm.total, 3)),
            Sample("swap_used_percent", float(swap.percent)),
        ]
        seen: set[str] = set()
        for part in psutil.disk_partitions(all=False):
            if part.fstype in _NOT_DISKS or part.device in seen:
                continue
            if part.mountpoint.startswith(_NOT_DISK_MOUNTS):
                continue
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except OSError:
                continue
            seen.add(part.device)
            out += disk_samples(part.mountpoint, float(usage.total), float(usage.used))
        cpu = psutil.cpu_times()
        idle = cpu.idle + getattr(cpu, "iowait", 0.0)
        total = sum(cpu)
        net = psutil.net_io_counters(pernic=True)
        rx = sum(n.bytes_recv for name, n in net.items() if name != "lo")
        tx = sum(n.bytes_sent for name, n in net.items() if name != "lo")
        out += self.counters.rates(time.monotonic(), total - idle, total, rx, tx)
        return out


# One call: every file the numbers come from, separated by a line no file has.
PROC_SCRIPT = (
    "cat /proc/loadavg; echo @@; cat /proc/meminfo; echo @@; head -n 1 /proc/stat; "
    "echo @@; cat /proc/net/dev; echo @@; df -P -k"
)


def parse_proc(text: str) -> tuple[list[Sample], tuple[float, float, float, float]]:
    """Samples of a host from PROC_SCRIPT's output, and its cumulative counters
    (cpu busy, cpu total, rx bytes, tx bytes) for the next round's rates."""
    parts = text.split("@@\n")
    if len(parts) != 5:
        raise ValueError("unexpected output: /proc or df missing on the host")
    loadavg, meminfo, stat, netdev, df = parts
    load = loadavg.split()
    out = [Sample("load_1", float(load[0])), Sample("load_5", float(load[1]))]
    out.append(Sample("load_15", float(load[2])))
    mem = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if rest.split():
            mem[key] = float(rest.split()[0]) * 1024
    total = mem["MemTotal"]
    available = mem.get("MemAvailable", mem.get("MemFree", 0.0))
    out += [
        Sample("memory_total_bytes", total),
        Sample("memory_used_bytes", total - available),
        Sample("memory_used_percent", round(100.0 * (total - available) / total, 3)),
    ]
    if mem.get("SwapTotal"):
        swap_used = mem["SwapTotal"] - mem.get("SwapFree", 0.0)
        out.append(Sample("swap_used_percent", round(100.0 * swap_used / mem["SwapTotal"], 3)))
    else:
        out.append(Sample("swap_used_percent", 0.0))
    fields = [float(x) for x in stat.split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    # guest time is already in user/nice: count the first eight fields only
    cpu_total = sum(fields[:8])
    rx = tx = 0.0
    for line in netdev.splitlines()[2:]:
        name, _, rest = line.partition(":")
        cols = rest.split()
        if name.strip() != "lo" and len(cols) >= 9:
            rx += float(cols[0])
            tx += float(cols[8])
    seen: set[str] = set()
    for line in df.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 6 or not cols[1].isdigit():
            continue
        device, mount = cols[0], " ".join(cols[5:])
        if device in _NOT_DISKS or device in seen or mount.startswith(_NOT_DISK_MOUNTS):
            continue
        seen.add(device)
        out += disk_samples(mount, float(cols[1]) * 1024, float(cols[2]) * 1024)
    return out, (cpu_total - idle, cpu_total, rx, tx)


async def collect_remote(runner: CommandRunner, counters: Counters) -> list[Sample]:
    res = await runner.run(Command(("sh", "-c", PROC_SCRIPT)), limit_seconds=30)
    if res.returncode != 0 and not res.stdout:
        raise BackupError(ErrorCode.SOURCE_MISSING, "reading /proc failed", detail=res.stderr)
    try:
        samples, (busy, total, rx, tx) = parse_proc(res.stdout.decode("utf-8", "replace"))
    except (ValueError, KeyError, IndexError) as err:
        raise BackupError(ErrorCode.SOURCE_MISSING, f"cannot read the host's /proc: {err}") from err
    return samples + counters.rates(time.monotonic(), busy, total, rx, tx)


PG_STATS_SQL = (
    "select (select count(*) from pg_stat_activity), current_setting('max_connections'), "
    "case when pg_is_in_recovery() then coalesce(extract(epoch from now() - "
    "pg_last_xact_replay_timestamp()), 0) else -1 end"
)
MYSQL_STATS_SQL = (
    "SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
    "WHERE VARIABLE_NAME = 'THREADS_CONNECTED'), @@max_connections"
)


def _table(stdout: bytes) -> list[list[str]]:
    lines = stdout.decode("utf-8", "replace").splitlines()
    return [line.split("\t") for line in lines if line.strip()]


async def collect_database(runner: CommandRunner, target: Target) -> list[Sample]:
    """Connections, database sizes and replication lag, from the server's own statistics."""
    engine = target.engine()
    if engine == "postgresql":
        psql = await find_psql(runner, PG_BIN_GLOBS)
        conn = target.pg()
        stats = await runner.run(psql_command(psql, conn, PG_STATS_SQL), limit_seconds=30)
        sizes = await runner.run(psql_command(psql, conn, PG_DATABASES_SQL), limit_seconds=60)
        results = (stats, sizes)
    elif engine == "mysql":
        client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
        args = ("--batch", "--skip-column-names", "-e")
        stats = await runner.run(
            mysql_client_command(client, target.mysql(), *args, MYSQL_STATS_SQL), limit_seconds=30
        )
        sizes = await runner.run(
            mysql_client_command(client, target.mysql(), *args, MYSQL_DATABASES_SQL),
            limit_seconds=60,
        )
        results = (stats, sizes)
    else:
        return []
    for res in results:
        if res.returncode != 0:
            raise BackupError(
                ErrorCode.UNREACHABLE, "reading database statistics failed", detail=res.stderr
            )
    row = _table(results[0].stdout)[0]
    out = [Sample("db_connections", float(row[0])), Sample("db_max_connections", float(row[1]))]
    if len(row) > 2 and float(row[2]) >= 0:
        out.append(Sample("db_replication_lag_seconds", float(row[2])))
    for name, size in _table(results[1].stdout):
        out.append(Sample("db_size_bytes", float(size or 0), name))
    return out
