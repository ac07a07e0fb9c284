"""Errors a user can act on. Each carries a one-line message that the CLI prints as-is."""


class CljassistError(Exception):
    """Base for every error that should reach the user as a clear one-line message."""

    def __str__(self) -> str:
        # Messages quote what they were given (a key, a path, a parser's complaint): a line break in
        # it must not break the one line.
        return " ".join(super().__str__().splitlines())


class ModelNotFound(CljassistError):
    pass


class ModelLoadError(CljassistError):
    pass


class ReplUnavailable(CljassistError):
    """The nREPL could not be reached, or went away mid-request."""


class ReplTimeout(CljassistError):
    pass


class ReplNotAnswering(ReplUnavailable):
    """The REPL stopped answering earlier and no probe has had an answer since: it is left out."""


class InputError(CljassistError):
    """Unreadable file, cursor out of range, malformed case file, bad config."""


class Cancelled(CljassistError):
    """A completion was cancelled: a newer request for the same buffer, or the client went away."""
