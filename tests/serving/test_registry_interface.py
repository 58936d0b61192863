"""The registry's interface is written once (serving/registry/interface.py); everything that offers
it — the actor, its core, the ingress's client and the in-process tier's stand-in — must agree with it
method by method, so that a method added, renamed or changed in one place and not the others fails
here instead of at a Ray call in production."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Optional

import pytest

from serving.registry.actor import TaskRegistry
from serving.registry.core import RegistryCore
from serving.registry.interface import Registry, RegistryService
from serving.registry_client import RegistryClient
from tests.inprocess.conftest import StandInRegistry

pytestmark = pytest.mark.unit


def _methods(protocol: type) -> dict[str, Any]:
    """The methods a protocol declares, its bases' included."""
    names = {
        name
        for cls in protocol.__mro__
        if cls is not object and getattr(cls, "_is_protocol", False)
        for name, value in vars(cls).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }
    return {name: getattr(protocol, name) for name in names}


def _parameters(function: Any) -> list[inspect.Parameter]:
    """Parameters after ``self`` with their types resolved, without the ``_ray_trace_ctx`` that Ray's
    tracing adds to an actor's methods (it also sets their ``__signature__``, annotations unresolved)."""
    hints = typing.get_type_hints(function)
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [p.replace(annotation=hints.get(p.name, p.annotation)) for p in parameters if not p.name.startswith("_ray_")]


def _returns(function: Any) -> Any:
    return typing.get_type_hints(function).get("return")


def drift(implementation: type, protocol: type, exact: bool = True) -> list[str]:
    """How ``implementation`` differs from ``protocol``: missing methods, methods that are not async,
    parameters or return types that differ, and (``exact``) public methods the protocol lacks. An
    implementation may add parameters after the protocol's only when they have defaults."""
    problems = []
    declared = _methods(protocol)
    for name, expected in sorted(declared.items()):
        actual = getattr(implementation, name, None)
        if actual is None:
            problems.append(f"{name}: missing")
            continue
        if not inspect.iscoroutinefunction(actual):
            problems.append(f"{name}: not async")
        want, have = _parameters(expected), _parameters(actual)
        for position, parameter in enumerate(want):
            other: Optional[inspect.Parameter] = have[position] if position < len(have) else None
            if other is None or (other.name, other.kind, other.default, other.annotation) != (
                parameter.name,
                parameter.kind,
                parameter.default,
                parameter.annotation,
            ):
                problems.append(f"{name}: parameter {parameter} is {other}")
        for extra in have[len(want) :]:
            if extra.default is inspect.Parameter.empty:
                problems.append(f"{name}: extra parameter {extra} without a default")
        if _returns(expected) != _returns(actual):
            problems.append(f"{name}: returns {_returns(actual)}, not {_returns(expected)}")
    if exact:
        public = {
            name
            for name, value in inspect.getmembers(implementation, inspect.isfunction)
            if not name.startswith("_") and value.__qualname__.startswith(implementation.__qualname__ + ".")
        }
        problems.extend(f"{name}: not in the interface" for name in sorted(public - set(declared)))
    return problems


def test_the_actor_forwards_exactly_the_whole_interface():
    assert drift(TaskRegistry.__ray_actor_class__, RegistryService) == []


def test_the_core_offers_the_whole_interface():
    # Beyond it: start() (the actor calls it once) and cancel's grace period (a default).
    assert drift(RegistryCore, RegistryService, exact=False) == []


def test_the_ingress_client_offers_exactly_what_the_routes_use():
    assert drift(RegistryClient, Registry) == []


def test_the_in_process_stand_in_offers_exactly_what_the_routes_use():
    assert drift(StandInRegistry, Registry) == []


def test_a_method_that_drifts_from_the_interface_is_reported():
    """The check itself: a changed parameter, a missing method, a sync one and an extra one all show."""

    class Drifted:
        async def create(self, spec: int) -> None: ...

        def status(self, task_id: str) -> None: ...

        async def wait(self, task_id: str, timeout: float, strict: bool) -> None: ...

        async def extra(self) -> None: ...

    problems = drift(Drifted, Registry)
    assert any(p.startswith("create: parameter") for p in problems)
    assert "status: not async" in problems
    assert any(p.startswith("wait: extra parameter") for p in problems)
    assert "queue: missing" in problems and "extra: not in the interface" in problems
