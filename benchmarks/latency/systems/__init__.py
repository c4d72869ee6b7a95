"""The systems under test. Every module in this package that defines ``ADAPTERS`` (a tuple of
:class:`~benchmarks.latency.systems.base.SystemSpec`) is found here: adding a peer is one new file."""

from __future__ import annotations

import importlib
import pkgutil

from benchmarks.latency.systems.base import KINDS, PARTS, SetupContext, System, SystemSpec


def _discover() -> dict[str, SystemSpec]:
    found: list[SystemSpec] = []
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base":
            continue
        found.extend(getattr(importlib.import_module(f"{__name__}.{module.name}"), "ADAPTERS", ()))
    return {spec.name: spec for spec in sorted(found, key=lambda s: (s.order, s.name))}


#: Every known system by name, in table order (baselines, peers, fastdpr).
REGISTRY: dict[str, SystemSpec] = _discover()
SYSTEMS: tuple[str, ...] = tuple(REGISTRY)
#: What a run measures unless ``--systems`` says otherwise (variants such as a peer's own ANN are asked for).
DEFAULT_SYSTEMS: tuple[str, ...] = tuple(name for name, spec in REGISTRY.items() if spec.default)

__all__ = ["DEFAULT_SYSTEMS", "KINDS", "PARTS", "REGISTRY", "SYSTEMS", "SetupContext", "System", "SystemSpec"]
