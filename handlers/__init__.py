"""The Telegram conversation layer: one module per journey. Reads updates, calls models, renders replies."""
