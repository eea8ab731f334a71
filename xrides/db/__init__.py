"""The system of record's schema: numbered migrations and ``migrate``, shared by every process that
connects to PostgreSQL (each calls ``migrate`` at start with its own role)."""

from xrides.db.migrate import ROLES, SchemaOutdated, migrate, set_role_passwords

__all__ = ["ROLES", "SchemaOutdated", "migrate", "set_role_passwords"]
