from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that cannot work. The message is one line: key, value, and the fix."""
