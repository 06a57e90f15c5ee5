"""The wrapper-script protocol of the remote runners (SSH, ``docker exec``).

A remote command starts as ``/bin/sh -c <boot_loop>``: a fixed, secret-free program
that reads the real script (:func:`wrapper_script`) from stdin up to a random sentinel
line and runs it. The script takes the command's environment and secret files from
stdin, never from argv (``ps`` on the host shows none of them), checks that the tool
exists, reports ``<sentinel> ok <pid> <pgid>`` on stderr (the :class:`Marker`) and runs
the tool, whose stdin is whatever follows the sentinel. A secret file is written, opened
on a descriptor and removed before the tool starts: the tool reads ``/dev/fd/N``, and
nothing is left on the host's disk, even when the process or this server is killed.
See :mod:`opscenter.remote.ssh` for the whole story.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from opscenter.remote.runner import Command, CommandRunner, SecretFile

__all__ = [
    "GLOB_SCRIPT",
    "Marker",
    "boot_loop",
    "glob_on",
    "kill_script",
    "new_sentinel",
    "parse_marker",
    "which_on",
    "wrapper_script",
]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_STRIPPED_ENV = ("PG", "MYSQL", "OPSCENTER_")


@dataclass(frozen=True, slots=True)
class Marker:
    state: str  # ok | missing | nocwd | nosecret | none
    pid: int | None = None
    pgid: int | None = None


def boot_loop(sentinel: str) -> str:
    """The secret-free program of ``/bin/sh -c``: read the script up to the sentinel line
    (one byte at a time, so what follows stays on stdin for the tool), then run it."""
    return (
        "s=; while IFS= read -r l || exit 125; "
        f'[ "$l" != {sentinel} ]; do s="$s$l\n"; done; eval "$s"'
    )


def new_sentinel() -> str:
    return "OPSCENTER_" + secrets.token_hex(16)


def _octal(content: bytes) -> str:
    return "".join(f"\\{b:03o}" for b in content)


def _secret_path(f: SecretFile) -> str:
    if not _FILE_NAME.match(f.name):
        raise ValueError(f"invalid secret file name {f.name!r}")
    return f"{f.name}.cnf"


def _secret_fd(index: int) -> int:
    return 3 + index  # past stdin, stdout and stderr


def _shell_word(arg: str, files: Sequence[SecretFile]) -> str:
    """``arg`` as one shell word, secret-file placeholders replaced by ``/dev/fd/N``."""
    parts: list[str] = []
    rest = arg
    while True:
        hits = [(rest.find(f.ref), f) for f in files if f.ref in rest]
        if not hits:
            break
        idx, f = min(hits, key=lambda h: h[0])
        if idx:
            parts.append(shlex.quote(rest[:idx]))
        parts.append(f"/dev/fd/{_secret_fd(files.index(f))}")
        rest = rest[idx + len(f.ref) :]
    if rest or not parts:
        parts.append(shlex.quote(rest))
    return "".join(parts)


def wrapper_script(
    command: Command,
    sentinel: str,
    *,
    stdin_null: bool,
    stdout_null: bool,
    extra_path: Sequence[str],
) -> bytes:
    if not command.argv:
        raise ValueError("empty argv")

    def fail(state: str, status: int = 125) -> str:
        return f"{{ printf '%s {state}\\n' {sentinel} >&2; exit {status}; }}"

    lines = [
        "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM",
        "u=$(umask); umask 077; d=",
        "for v in $(env 2>/dev/null | sed -n"
        + "".join(f" -e 's/^\\({p}[A-Za-z0-9_]*\\)=.*/\\1/p'" for p in _STRIPPED_ENV)
        + ' 2>/dev/null); do unset "$v"; done',
    ]
    env = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", **command.env}
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if "\x00" in value:
            raise ValueError(f"NUL in environment variable {name}")
        lines.append(f"export {name}={shlex.quote(value)}")
    if extra_path:
        lines.append(f'PATH={shlex.quote(":".join(extra_path))}:"$PATH"; export PATH')
    if command.secret_files:
        lines.append(
            'd=$(mktemp -d "${TMPDIR:-/tmp}/opscenter-secret.XXXXXXXXXX") && [ -n "$d" ] || '
            + fail("nosecret")
        )
        lines.append("trap 'rm -rf -- \"$d\"' EXIT")
        for index, f in enumerate(command.secret_files):
            target = '"$d"/' + shlex.quote(_secret_path(f))
            lines.append(
                f"{{ printf {shlex.quote(_octal(f.content))} > {target} && "
                f"exec {_secret_fd(index)}< {target}; }} || " + fail("nosecret")
            )
        # Only the open descriptors hold the secrets now: nothing on disk can outlive us.
        lines.append('rm -rf -- "$d" || ' + fail("nosecret"))
    lines.append('umask "$u"')
    if command.cwd:
        lines.append(f"cd -- {shlex.quote(command.cwd)} || " + fail("nocwd"))
    tool = shlex.quote(command.argv[0])
    lines.append(
        f"case {tool} in */*) [ -f {tool} ] && [ -x {tool} ] ;; "
        f"*) command -v {tool} >/dev/null 2>&1 ;; esac || " + fail("missing", 127)
    )
    lines.append("g=$$; [ -r /proc/$$/stat ] && read -r _ _ _ _ g _ < /proc/$$/stat")
    lines.append(f'printf \'%s ok %s %s\\n\' {sentinel} "$$" "$g" >&2')
    argv = " ".join(_shell_word(a, command.secret_files) for a in command.argv)
    redirects = (" </dev/null" if stdin_null else "") + (" >/dev/null" if stdout_null else "")
    lines.append(f"{argv}{redirects}; exit $?")
    lines.append(sentinel)
    return ("\n".join(lines) + "\n").encode()


GLOB_SCRIPT = (
    'IFS=; for p in $1; do if [ -e "$p" ] || [ -L "$p" ]; then printf "%s\\000" "$p"; fi; done'
)


def parse_marker(line: bytes, sentinel: bytes) -> Marker | None:
    """The marker in one stderr line, or ``None`` when the line is not one."""
    if not line.startswith(sentinel + b" "):
        return None
    fields = line[len(sentinel) + 1 :].decode("utf-8", "replace").split()
    state = fields[0] if fields else "none"
    if state == "ok" and len(fields) >= 3:
        pid = int(fields[1]) if fields[1].isdigit() else None
        pgid = int(fields[2]) if fields[2].isdigit() else None
        return Marker("ok", pid, pgid)
    return Marker(state)


def kill_script(marker: Marker, signame: str) -> str:
    """Signal the command's process group (or only its children when the wrapper is not a
    group leader: never someone else's group)."""
    pid, pgid = marker.pid, marker.pgid
    if pgid == pid:
        script = f"kill -s {signame} -- -{pgid} || kill -s {signame} {pid}"
    else:
        script = f"pkill -{signame} -P {pid}; kill -s {signame} {pid}"
    return f"{{ {script}; }} >/dev/null 2>&1; exit 0"


async def which_on(runner: CommandRunner, name: str) -> str | None:
    """``which`` for a remote runner: ``command -v`` run where its commands run."""
    command = Command(("sh", "-c", 'command -v -- "$1"', "sh", name))
    res = await runner.run(command, limit_seconds=30)
    path = res.stdout.decode("utf-8", "replace").strip()
    return path if res.returncode == 0 and path.startswith("/") else None


async def glob_on(runner: CommandRunner, pattern: str) -> list[str]:
    """``glob`` for a remote runner: the shell expands ``pattern`` where commands run."""
    res = await runner.run(Command(("sh", "-c", GLOB_SCRIPT, "sh", pattern)), limit_seconds=30)
    if res.returncode != 0:
        return []
    return sorted(p for p in res.stdout.decode("utf-8", "replace").split("\0") if p)
