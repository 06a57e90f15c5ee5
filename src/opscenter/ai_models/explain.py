"""The registry's use in the product: an explanation of a failed backup's error, made
through the team's `backup_explanation` chain (or its default chain). The team can
replace the built-in prompt with its own `backup-error-explanation` prompt (label
production); the answer names the model that gave it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.ai_models import gateway, service
from opscenter.ai_models.schemas import Explanation
from opscenter.core.errors import Conflict
from opscenter.core.principal import Principal
from opscenter.core.scoping import get_readable
from opscenter.models import Backup, BackupStatus

PROMPT_NAME = "backup-error-explanation"
PURPOSE = "backup_explanation"
SYSTEM = (
    "You are a senior database administrator. Explain backup failures to an operator in "
    "plain words: the likely cause first, then the steps to fix it. Be brief and concrete."
)
TEMPLATE = (
    "A {{engine}} backup of the database '{{database}}' failed.\n"
    "Error code: {{error_code}}\n"
    "Error message:\n{{error_message}}\n\n"
    "Explain what most likely went wrong and what to check or change."
)
FAILED = (BackupStatus.FAILED, BackupStatus.INTERRUPTED)


class BackupNotFailed(Conflict):
    code = "BACKUP_NOT_FAILED"


async def explain_backup(
    app: gateway.Services, session: AsyncSession, principal: Principal, backup_id: int
) -> Explanation:
    backup = await get_readable(session, Backup, backup_id, principal, name="Backup")
    if backup.status not in FAILED:
        raise BackupNotFailed(
            f"Backup {backup_id} is {backup.status}: only a failed backup's error is explained"
        )
    values = {
        "engine": backup.db_type,
        "database": backup.database_name,
        "error_code": backup.error_code or "unknown",
        "error_message": (backup.error_message or "no message was recorded")[:8000],
    }
    prompt = await service.find_prompt(session, backup.team_id, PROMPT_NAME, None, None)
    if prompt is None:
        messages = service.render(PROMPT_NAME, None, SYSTEM, TEMPLATE, values)
    else:
        messages = service.render(
            prompt.name, prompt.version, prompt.system, prompt.template, values
        )
    version = prompt.version if prompt else None
    answer = await gateway.run(
        app,
        session,
        team_id=backup.team_id,
        purpose=PURPOSE,
        messages=messages,
        user_id=principal.user_id,
    )
    return Explanation(
        backup_id=backup_id,
        explanation=answer.text,
        model_id=answer.model_id,
        model_name=answer.model_name,
        provider=answer.provider,
        model=answer.model,
        prompt_version=version,
        request_id=answer.request_id,
        cost_usd=answer.cost_usd,
    )
