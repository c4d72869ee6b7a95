"""Exception types raised by fastdpr.

Everything fastdpr raises on purpose derives from :class:`FastDPRError`, so callers (and the CLI,
which turns these into ``click.ClickException``) can tell a user mistake from a bug.
"""

from __future__ import annotations


class FastDPRError(Exception):
    """Base class of every error fastdpr raises deliberately.

    ``str(error)`` is one line, the message a user sees. Longer explanations (a table of failed checks,
    a list of mismatched files) go in ``details``: the CLI prints them only when asked
    (``FASTDPR_DETAILS=1``), so an error never floods a terminal or a log line.
    """

    def __init__(self, message: str, *, details: str | None = None) -> None:
        # One line: a message with newlines would make every log line and HTTP error ambiguous.
        first, _, rest = str(message).partition("\n")
        super().__init__(first)
        extra = [part for part in (rest.strip(), (details or "").strip()) if part]
        self.details: str | None = "\n".join(extra) or None


class ArtifactError(FastDPRError):
    """An export artifact is missing, corrupted, or of an unsupported format."""


class IndexLoadError(FastDPRError):
    """An index directory is missing, corrupted, or does not match its artifact."""


class CorpusError(FastDPRError):
    """A corpus or question file cannot be read (or a row is rejected under ``--strict``)."""


class ExportError(FastDPRError):
    """Exporting a model failed (bad source, failed validation, missing export extra)."""


class ValidationError(ExportError):
    """A stage of the export did not reproduce PyTorch within its threshold."""


class MissingDependencyError(FastDPRError):
    """An optional dependency (the ``export`` extra) is needed but not installed."""


class Int8Warning(UserWarning):
    """The int8 graph misses its export thresholds on this CPU (its int8 kernels differ from the
    export machine's): results are returned, but their recall is not what the manifest promises."""
