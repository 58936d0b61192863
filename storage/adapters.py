"""The LoRA adapter catalogue: rows of ``lora_adapters``, looked up by name."""

from __future__ import annotations

from typing import Optional

from sqlmodel import Session, select

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
    return {row.name: row for row in session.exec(select(LoraAdapter).where(LoraAdapter.name.in_(names)))}


def get_adapter(session: Session, name: str) -> Optional[LoraAdapter]:
    return session.exec(select(LoraAdapter).where(LoraAdapter.name == name)).first()
