"""The one exception hierarchy of kb-qa.

The CLI maps these to exit codes and one readable line; the API maps them to HTTP statuses in one
place (kb_qa/api/errors.py). Each class names the situation, and its message says what to do.
"""

from __future__ import annotations


class KbQaError(Exception):
    """Base of every error kb-qa raises on purpose."""

    code = "error"


class ConfigError(KbQaError):
    """A setting is invalid; the message names the key and the allowed values."""

    code = "invalid_config"


class ModelUnavailable(KbQaError):
    """A model cannot be found or loaded on this machine."""

    code = "model_unavailable"


class InvalidName(KbQaError):
    """A knowledge-base name breaks the naming rules."""

    code = "invalid_name"


class KnowledgeBaseNotFound(KbQaError):
    """No knowledge base of that name exists."""

    code = "kb_not_found"


class KnowledgeBaseExists(KbQaError):
    """A knowledge base of that name already exists."""

    code = "kb_exists"


class DocumentNotFound(KbQaError):
    """The knowledge base holds no document of that name."""

    code = "document_not_found"


class EmbeddingMismatch(KbQaError):
    """The knowledge base was built with another embedding model or dimension."""

    code = "embedding_mismatch"


class DocumentRejected(KbQaError):
    """A file cannot be ingested (unsupported type, too large, empty, encrypted, malformed)."""

    code = "document_rejected"


class BadRequest(KbQaError):
    """A request's value is missing, unknown or out of range (an empty question, an unknown mode,
    top_k 0); the message names the value and what is allowed."""

    code = "bad_request"


class IndexUnreadable(KbQaError):
    """A stored index cannot be read: a fault on the server's side, not in the request."""

    code = "index_unreadable"


class Conflict(KbQaError):
    """The knowledge base changed under the request (deleted and re-created while it waited)."""

    code = "conflict"


class StorageError(KbQaError):
    """The knowledge-base root, the registry or the disk cannot be used; the message names the fix."""

    code = "storage_error"


class StorageUnavailable(StorageError):
    """The database holding the knowledge bases cannot be reached for now; try again shortly."""

    code = "storage_unavailable"


class Busy(KbQaError):
    """Another writer holds the knowledge base; try again later."""

    code = "busy"
