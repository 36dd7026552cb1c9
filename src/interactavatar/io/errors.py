"""The one error for a URI that names nothing we can fetch: a registry model or version that does not
exist, an S3 server that does not answer.

Its message starts with the URI, so the command line prints it as one line (`cli.py`: exit 1, no
traceback) and a user sees at once which reference or endpoint to fix. It is a ValueError because
callers that add their own context to a bad reference (a LoRA base, the pipeline's init_model)
already catch ValueError.
"""

from __future__ import annotations


class UnavailableURI(ValueError):
    """uri: the reference as given (models:/..., s3://...); reason: why it cannot be fetched."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason
