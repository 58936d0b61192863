"""The LoRA adapter catalogue: rows of ``lora_adapters``, looked up by name."""

from __future__ import annotations

import os
from typing import Optional

from sqlmodel import Session, col, select

from storage.tables import LoraAdapter


def list_adapters(session: Session, model: Optional[str] = None) -> list[LoraAdapter]:
    """Every adapter (of ``model``, if given), by name."""
    query = select(LoraAdapter).order_by(LoraAdapter.name)
    if model is not None:
        query = query.where(LoraAdapter.model == model)
    return list(session.exec(query))


def adapters_named(session: Session, names: list[str]) -> dict[str, LoraAdapter]:
    """The adapters called ``names`` that exist, by name."""
    if not names:
        return {}
    return {row.name: row for row in session.exec(select(LoraAdapter).where(col(LoraAdapter.name).in_(names)))}


def get_adapter(session: Session, name: str) -> Optional[LoraAdapter]:
    return session.exec(select(LoraAdapter).where(LoraAdapter.name == name)).first()


def others_reading(session: Session, row: LoraAdapter) -> list[LoraAdapter]:
    """The other local adapters whose weights are ``row``'s file (e.g. an uploaded file registered
    again as ``local:uploads/…``)."""
    if row.source_type != "local":
        return []
    query = select(LoraAdapter).where(LoraAdapter.source_type == "local", LoraAdapter.name != row.name)
    return [other for other in session.exec(query) if os.path.normpath(other.source) == os.path.normpath(row.source)]
