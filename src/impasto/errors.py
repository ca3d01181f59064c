"""The one exception type for a user's mistake.

A ``UserError`` carries a single line that says what is wrong, which file or option,
and how to fix it. The CLI prints it and exits with status 2; the API lets it propagate.
"""


class UserError(ValueError):
    """Bad input from the user: a file, an option value, an image that cannot be used."""


def closest(name, candidates):
    """The candidate nearest to ``name`` by edit distance (for 'did you mean' hints)."""
    import difflib

    best = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.0)
    return best[0] if best else None


class Cancelled(Exception):
    """A run was cancelled before its first step: nothing was made or written."""
