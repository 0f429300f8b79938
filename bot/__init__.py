"""Waystation: the application layer (config, database, i18n, delivery, CLI, sandbox)."""
