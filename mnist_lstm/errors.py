"""The one exception type the entry points turn into a one-line message instead of a traceback."""


class UserError(Exception):
    """A mistake the user can fix (a bad override, missing data, a wrong checkpoint, a bad image), said in one line:
    what is wrong and how to fix it."""
