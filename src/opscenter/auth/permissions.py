"""The permission catalogue (`verb:resource`) and the built-in roles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from opscenter.core.principal import ALL_TEAMS

Check = TypeVar("Check", bound=Callable[..., Any])

RESOURCES = (
    "users",
    "teams",
    "roles",
    "tokens",
    "audit",
    "servers",
    "backups",
    "encryption",
    "storage",
    "schedules",
    "retention",
    "verification",
    "jobs",
    "notifications",
    "integrations",
    "commands",
    "sops",
    "incidents",
    "tasks",
    "security",
    "finops",
    "resources",
    "compliance",
    "reports",
    "analytics",
    "knowledge",
    "ai_models",
)
EXECUTABLE = ("commands", "sops", "restores")
# A download link hands over a whole artifact: reading the data, more than its catalog row.
DOWNLOAD_BACKUPS = "download:backups"
# Reading and writing this host's files as the server's OS user: the paths of local and
# sqlite servers, and restoring artifacts that were imported rather than made here.
HOST_FILES = "access:host_files"
# Scans read this installation's accounts, keys and settings and probe the network: admins'.
SCAN_SECURITY = "scan:security"

PERMISSIONS: tuple[str, ...] = (
    *(f"read:{r}" for r in RESOURCES),
    *(f"write:{r}" for r in RESOURCES),
    *(f"execute:{r}" for r in EXECUTABLE),
    DOWNLOAD_BACKUPS,
    HOST_FILES,
    SCAN_SECURITY,
    ALL_TEAMS,
)

_ADMIN_ONLY_RESOURCES = {
    "users",
    "teams",
    "roles",
    "tokens",
    "storage",
    "integrations",
    "encryption",
}
_HIDDEN_FROM_VIEWERS = {"users", "tokens", "audit"}

BUILTIN_ROLES: dict[str, tuple[str, list[str]]] = {
    "admin": ("Everything, across all teams", list(PERMISSIONS)),
    "operator": (
        "Runs backups, restores, runbooks and incidents for their teams",
        [
            *(f"read:{r}" for r in RESOURCES if r not in {"users", "tokens"}),
            *(f"write:{r}" for r in RESOURCES if r not in _ADMIN_ONLY_RESOURCES | {"audit"}),
            *(f"execute:{r}" for r in EXECUTABLE),
            DOWNLOAD_BACKUPS,
        ],
    ),
    "viewer": (
        "Read-only dashboards and API",
        [f"read:{r}" for r in RESOURCES if r not in _HIDDEN_FROM_VIEWERS],
    ),
}

DESCRIPTIONS = {
    "read": "See {r}",
    "write": "Create, change and delete {r}",
    "execute": "Run {r}",
    "download": "Download {r}",
}
_SPECIAL = {
    ALL_TEAMS: "See and change the resources of every team, not only one's own",
    SCAN_SECURITY: "Run posture and surface scans, change security policies and the "
    "addresses the surface scan may probe",
    HOST_FILES: "Read and write this host's files as the server's OS user: the paths of "
    "local and sqlite servers, and restores of imported artifacts",
}


def describe(permission: str) -> str:
    if permission in _SPECIAL:
        return _SPECIAL[permission]
    verb, resource = permission.split(":", 1)
    return DESCRIPTIONS[verb].format(r=resource.replace("_", " "))


_CHECKS: dict[Callable[..., Any], str] = {}


def checks(permission: str, dependency: Check) -> Check:
    """Remember that `dependency` checks `permission`, so a test can walk every route
    and find the permission it names (see `checked_by`)."""
    _CHECKS[dependency] = permission
    return dependency


def checked_by(dependency: Callable[..., Any]) -> str | None:
    """The permission a dependency made by `require` (API) or `can_see` (pages) checks."""
    return _CHECKS.get(dependency)
