"""User-facing errors: each one sentence naming the key or file and the fix."""


class GaitKDError(Exception):
    """Base class of errors caused by user input (config, data, checkpoints), not by bugs."""


class ConfigError(GaitKDError, ValueError):
    """A configuration value is missing, unknown or inconsistent."""
