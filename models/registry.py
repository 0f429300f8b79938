"""Imports every table module so SQLModel.metadata is complete (for migrations and tests)."""

from models import conversation_store, users

__all__ = ["conversation_store", "users"]
