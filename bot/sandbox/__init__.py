"""Sandbox: an in-process fake of the Telegram Bot API, used by end-to-end tests and the browser demo."""
