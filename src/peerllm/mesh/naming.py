"""Which model id a pulled file is served under, and whether it may replace what is
served under that id now.

A pull a user started (``peerllm pull``, the API) may hot-swap the model of that id: the
user asked for that file (by id, digest or URL), and the id is the one they named, else
the holder's ``ModelMeta.id``, else the URL's file name. A pull the node started itself
(replication) never replaces a model this node serves from another file: a peer's
advertisement alone must not change what this node serves under an id. A name from a
peer or a URL must have the form of a model id with no path in it; else the file gets
the ``sha256-<12 hex>`` id.
"""

from __future__ import annotations

from typing import Final

from ..errors import TransferError
from ..transfer.store import is_model_id
from ..wire import blob as wb
from .pull_ports import Installer

MODEL_TYPES: Final = frozenset({"llm", "embedding"})


def digest_id(digest: str) -> str:
    """``sha256-<12 hex>``: the id of a file nobody named (or whose name is taken)."""
    return f"sha256-{wb.short_digest(digest)}"


def plain_name(text: str | None) -> str | None:
    """``text`` when it can be a model id from a peer or a URL: the store's id form, no
    ``..``/``//``/``@``, not a digest; else None."""
    if not text or "@" in text or wb.is_digest(text) or not is_model_id(text):
        return None
    return text if wb.ref_problem(text) is None else None


def stem(filename: str) -> str | None:
    """A URL's file name without its ``.gguf`` ending, when it can be a model id."""
    return plain_name(filename.rsplit("/", 1)[-1].removesuffix(".gguf"))


def meta_problem(meta: wb.ModelMeta | None) -> str | None:
    """Why a holder's meta cannot be served (its fault), or None."""
    if meta is not None and meta.type not in MODEL_TYPES:
        return f"it says the file is a {meta.type[:40]!r} model, not one of {sorted(MODEL_TYPES)}"
    return None


def install_id(*, named: str | None, offered: str | None, digest: str | None,
               installer: Installer, replication: bool) -> str | None:
    """The id to install the file under (None: not known until its digest is).

    ``named``: the id the pull was started with; ``offered``: the holder's or the URL's
    name (already ``plain_name``-checked).

    Raises:
        TransferError: a replication of a model this node serves from another file.
    """
    name = named or offered
    if name is None:
        return None if digest is None else digest_id(digest)
    if replication:
        served = installer.serving(name)
        if served is not None and (digest is None or served.digest != digest):
            raise TransferError(f"this node serves {name} from another file; a replica "
                                "does not replace it", digest=digest)
    return name
