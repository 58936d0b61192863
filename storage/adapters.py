"""The LoRA adapter catalogue: rows of ``lora_adapters``, looked up by name."""

from __future__ import annotations

import os
from typing import Optional

from sqlmodel import Session, col, select

from storage.tables import Adapter


def list_adapters(session: Session, model: Optional[str] = None) -> list[Adapter]:
    """Every adapter (of ``model``, if given), by name."""
    query = select(Adapter).order_by(Adapter.name)
    if model is not None:
        query = query.where(Adapter.model == model)
    return list(session.exec(query))


def adapters_named(session: Session, names: list[str]) -> dict[str, Adapter]:
    """The adapters called ``names`` that exist, by name."""
    if not names:
        return {}
    return {row.name: row for row in session.exec(select(Adapter).where(col(Adapter.name).in_(names)))}


def get_adapter(session: Session, name: str) -> Optional[Adapter]:
    return session.exec(select(Adapter).where(Adapter.name == name)).first()


def others_reading(session: Session, row: Adapter) -> list[Adapter]:
    """The other local adapters whose weights are ``row``'s file (e.g. an uploaded file registered
    again as ``local:uploads/…``)."""
    if row.source_type != "local":
        return []
    query = select(Adapter).where(Adapter.source_type == "local", Adapter.name != row.name)
    return [other for other in session.exec(query) if os.path.normpath(other.source) == os.path.normpath(row.source)]
