"""The one exception type for a user's mistake.

A ``UserError`` carries a single line that says what is wrong, which file or option,
and how to fix it. The CLI prints it and exits with status 2; the API lets it propagate.
"""


class UserError(ValueError):
    """Bad input from the user: a file, an option value, an image that cannot be used.

    ``details``: for several problems at once, one line each, shown indented under the
    message (``str(e)`` holds them all)."""

    def __init__(self, message: str, details=None):
        self.message, self.details = str(message), [str(d) for d in details or []]
        super().__init__("\n".join([self.message] + [f"  {d}" for d in self.details]))

    def lines(self) -> list:
        """The message and each detail as display lines, control characters escaped: a
        newline in a file name never breaks the one line."""
        return [printable(self.message)] + [f"  {printable(d)}" for d in self.details]


def problems_error(lines, head: str, prefix: str = "") -> UserError:
    """One UserError for the problem ``lines``: a single problem as one line (``prefix``
    and the problem), several as ``head`` and a line each."""
    lines = list(lines)
    if len(lines) == 1:
        return UserError(prefix + lines[0])
    return UserError(head, lines)


def printable(text) -> str:
    """``text`` with control characters (newlines, tabs, terminal escapes) written as
    Python escapes, so it shows on one line and cannot move the cursor."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode()
                   for c in text)


def show_path(path) -> str:
    """A file name as messages show it: as given, or quoted when it is empty or has
    leading or trailing spaces or control characters (so the reader sees what is there)."""
    text = str(path)
    if text and text.strip() == text and text.isprintable():
        return text
    return repr(text)


def closest(name, candidates):
    """The candidate nearest to ``name`` by edit distance (for 'did you mean' hints)."""
    import difflib

    best = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.0)
    return best[0] if best else None


class Cancelled(Exception):
    """A run was cancelled before its first step: nothing was made or written."""
