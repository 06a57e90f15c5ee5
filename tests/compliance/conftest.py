from tests.schedules.helpers import source_db

__all__ = ["source_db"]
