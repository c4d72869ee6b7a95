"""Which INT8 kernel class this CPU gives ONNX Runtime, read from the CPU's feature flags.

ONNX Runtime's dynamic int8 multiplies u8 activations by s8 weights (U8S8). How the products are summed
depends on the CPU, and that changes the numbers, not only the speed:

* AVX2 and AVX-512 without VNNI use ``vpmaddubsw``: it adds each *pair* of u8 x s8 products into a
  **saturating int16**. With 8-bit weights, ``2 x 255 x 127 = 64770`` overflows ``32767``, so some
  dot products come out wrong (clipped). 7-bit weights (``|w| <= 64``: ``2 x 255 x 64 = 32640``) never
  overflow, and then the result is exact.
* AVX-VNNI, AVX-512 VNNI (``vpdpbusd``) and AMX (``tdpbusd``) accumulate into int32: exact.
* ARM64 ``sdot``/``udot`` (dot-product extension) accumulate into int32 as well; fastdpr has not
  measured ARM64, so it makes no claim there.

Every measurement fastdpr writes (export validation, index verification, benchmark results) names
the class it was measured on, because the same int8 file can retrieve differently on another class.
``FASTDPR_CPU_CLASS`` overrides the detection: for running under an emulator (e.g. valgrind, which
presents an AVX2 CPU while ``/proc/cpuinfo`` still shows the host's flags).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CPU_CLASS_ENV = "FASTDPR_CPU_CLASS"


@dataclass(frozen=True)
class Int8Class:
    """One family of int8 GEMM kernels, as ONNX Runtime dispatches them."""

    name: str
    description: str
    #: Whether U8S8 products are summed pairwise into a saturating int16 (None: not known).
    pairwise_int16_saturation: bool | None


INT8_CLASSES: dict[str, Int8Class] = {
    c.name: c
    for c in (
        Int8Class("x86-amx", "x86-64 with AMX-INT8 (tdpbusd, int32 accumulation)", False),
        Int8Class("x86-avx512-vnni", "x86-64 with AVX-512 VNNI (vpdpbusd, int32 accumulation)", False),
        Int8Class("x86-avx-vnni", "x86-64 with AVX-VNNI (vpdpbusd, int32 accumulation)", False),
        Int8Class("x86-avx512", "x86-64 with AVX-512BW, no VNNI (vpmaddubsw, saturating int16 pairs)", True),
        Int8Class("x86-avx2", "x86-64 with AVX2, no VNNI (vpmaddubsw, saturating int16 pairs)", True),
        Int8Class("x86-sse", "x86-64 without AVX2 (SSE kernels; not measured)", None),
        Int8Class("arm64-dotprod", "ARM64 with the dot-product extension (sdot/udot; not measured)", None),
        Int8Class("arm64", "ARM64 without the dot-product extension (not measured)", None),
        Int8Class("unknown", "a CPU whose int8 kernels fastdpr cannot tell", None),
    )
}


def classify(machine: str, flags: frozenset[str]) -> str:
    """The int8 class name for an architecture (``platform.machine()``) and its feature flags.

    The order mirrors ONNX Runtime's own dispatch: AMX before VNNI before plain AVX-512/AVX2.
    """
    machine = machine.lower()
    if machine in ("x86_64", "amd64"):
        if {"amx_int8", "amx_tile"} <= flags:
            return "x86-amx"
        if "avx512_vnni" in flags and "avx512bw" in flags:
            return "x86-avx512-vnni"
        if "avx_vnni" in flags:
            return "x86-avx-vnni"
        if "avx512bw" in flags:
            return "x86-avx512"
        if "avx2" in flags:
            return "x86-avx2"
        return "x86-sse"
    if machine in ("aarch64", "arm64"):
        return "arm64-dotprod" if ("asimddp" in flags or "dotprod" in flags) else "arm64"
    return "unknown"


def _read_flags(cpuinfo: Path) -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` from ``/proc/cpuinfo`` (x86 says ``flags``, ARM64 ``Features``)."""
    model, flags = "", frozenset[str]()
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model, flags


@dataclass(frozen=True)
class CpuInfo:
    """This machine's CPU as far as int8 inference is concerned."""

    model: str
    machine: str
    int8_class: str
    source: str  # "cpuinfo" or "FASTDPR_CPU_CLASS"
    flags: tuple[str, ...]  # only the flags that decide the class

    @property
    def kernels(self) -> Int8Class:
        """The class's description."""
        return INT8_CLASSES[self.int8_class]

    def to_dict(self) -> dict[str, object]:
        """What manifests and benchmark results record."""
        return {"int8_class": self.int8_class, "description": self.kernels.description,
                "pairwise_int16_saturation": self.kernels.pairwise_int16_saturation,
                "model": self.model, "machine": self.machine, "flags": list(self.flags), "source": self.source}


_DECIDING_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "asimddp",
                   "dotprod", "i8mm")


def detect(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """Read this machine's int8 class (``FASTDPR_CPU_CLASS`` overrides, e.g. under an emulator)."""
    machine = platform.machine()
    model, flags = _read_flags(cpuinfo)
    override = os.environ.get(CPU_CLASS_ENV)
    if override:
        if override not in INT8_CLASSES:
            from fastdpr.common.errors import FastDPRError

            raise FastDPRError(f"{CPU_CLASS_ENV}={override!r} is not an int8 class; known: {', '.join(INT8_CLASSES)}")
        int8_class, source = override, CPU_CLASS_ENV
    else:
        int8_class, source = classify(machine, flags), "cpuinfo"
    return CpuInfo(model=model or platform.processor() or "unknown", machine=machine, int8_class=int8_class,
                   source=source, flags=tuple(f for f in _DECIDING_FLAGS if f in flags))


@lru_cache(maxsize=1)
def this_cpu() -> CpuInfo:
    """:func:`detect`, once per process."""
    return detect()
