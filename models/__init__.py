"""The domain: sqlmodel tables and the rules on them. Never imports telegram or handlers."""
