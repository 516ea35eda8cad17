"""The one exception type for mistakes a user can fix; the CLI prints it as a single line."""


class UserError(Exception):
    """A bad input (path, file content, config value, checkpoint) with a message naming the fix."""
