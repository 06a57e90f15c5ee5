"""The articles shipped in the package: each one loads, and every error code the product
can answer with (API codes and the failure codes of jobs) has its own."""

from __future__ import annotations

from opscenter.core.errors import AppError
from opscenter.core.failures import ErrorCode
from opscenter.core.handlers import _STATUS_CODES
from opscenter.domains import registry
from opscenter.knowledge.shipped import shipped_articles


def _subclasses(cls: type[AppError]) -> set[type[AppError]]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found))


def error_codes() -> set[str]:
    registry()  # imports every domain, and with it every error class it declares
    api = {AppError.code, *(err.code for err in _subclasses(AppError)), *_STATUS_CODES.values()}
    return {code.lower() for code in api} | {code.value for code in ErrorCode}


def test_every_error_code_has_an_article() -> None:
    documented = {code for item in shipped_articles() for code in item.article.links.error_codes}
    missing = sorted(error_codes() - documented)
    assert not missing, f"write an article in knowledge/articles/ for: {missing}"


def test_every_shipped_article_is_whole() -> None:
    slugs = [item.article.slug for item in shipped_articles()]
    assert len(slugs) == len(set(slugs)) >= 45
    for item in shipped_articles():
        assert item.path.stem == item.article.slug
        assert item.article.summary and item.article.content.strip()
    guides = {"how-backups-work", "how-restores-work", "how-masking-works"}
    guides |= {"how-retention-works", "how-verification-works", "how-runbooks-work"}
    assert guides <= set(slugs)
