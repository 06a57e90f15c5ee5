"""The domains of the installation, in the order their routes are included.

A new domain adds its `plugin.py` (`register(registry)`) and one line here.
"""

from __future__ import annotations

from functools import cache

from opscenter.ai_models import plugin as ai_models
from opscenter.analytics import plugin as analytics
from opscenter.attack import plugin as attack
from opscenter.audit import plugin as audit
from opscenter.auth import plugin as auth
from opscenter.backups import plugin as backups
from opscenter.commands import plugin as commands
from opscenter.compliance import plugin as compliance
from opscenter.core.registry import Registry
from opscenter.encryption import plugin as encryption
from opscenter.external_jobs import plugin as external_jobs
from opscenter.finops import plugin as finops
from opscenter.incidents import plugin as incidents
from opscenter.integrations import plugin as integrations
from opscenter.jobs import plugin as jobs
from opscenter.knowledge import plugin as knowledge
from opscenter.notifications import plugin as notifications
from opscenter.ops import plugin as ops
from opscenter.realtime import plugin as realtime
from opscenter.recovery import plugin as recovery
from opscenter.reports import plugin as reports
from opscenter.resources import plugin as resources
from opscenter.retention import plugin as retention
from opscenter.runbooks import plugin as runbooks
from opscenter.schedules import plugin as schedules
from opscenter.security import plugin as security
from opscenter.servers import plugin as servers
from opscenter.sso import plugin as sso
from opscenter.storage import plugin as storage
from opscenter.tokens import plugin as tokens
from opscenter.users import plugin as users
from opscenter.verify import plugin as verify

DOMAINS = (
    auth,
    users,
    tokens,
    sso,
    audit,
    servers,
    storage,
    backups,
    encryption,
    jobs,
    schedules,
    retention,
    recovery,
    external_jobs,
    verify,
    commands,
    runbooks,
    integrations,
    attack,
    incidents,
    notifications,
    ai_models,
    finops,
    ops,
    realtime,
    knowledge,
    resources,
    security,
    compliance,
    analytics,
    reports,
)


@cache
def registry() -> Registry:
    gathered = Registry()
    for domain in DOMAINS:
        domain.register(gathered)
    return gathered
