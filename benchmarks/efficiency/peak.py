"""The int8 peak of this machine: MACs per cycle per core for its CPU class x cores used x clock.

The per-cycle figures are the instruction set's best case, as the vendors state it (a frozen table keyed by
:data:`fastdpr.common.cpu.INT8_CLASSES`, not branches on the model name). A core of the class with fewer
vector units (a Xeon with one 512-bit FMA unit, AMD Zen 4's 256-bit halves) has a lower peak, so a "% of
peak" here is a lower bound on how much of *that* core's int8 arithmetic is used.

Sources (stated once here, recorded with every result):

* AVX-512 VNNI: ``vpdpbusd zmm`` does 16 lanes x 4 u8*s8 products = 64 MACs, and replaces the three
  instructions ``vpmaddubsw + vpmaddwd + vpaddd``; a Xeon core has "up to two 512-bit FMA units" that run them
  (Intel, "Introduction to Intel Deep Learning Boost on Second Generation Intel Xeon Scalable Processors",
  2019; Intel, "Code Sample: Intel AVX512-Deep Learning Boost: Intrinsic Functions", 2019; the instruction's
  definition in the Intel Intrinsics Guide, ``_mm512_dpbusd_epi32``). 2 x 64 = 128 MACs/cycle.
* AVX-VNNI: the same instruction on 256-bit registers (32 MACs), two per cycle: 64 MACs/cycle.
* AVX-512BW / AVX2 without VNNI: the three-instruction chain ``vpmaddubsw, vpmaddwd, vpaddd`` per 64 (zmm) or
  32 (ymm) MACs on the two FMA ports, i.e. "4x more input over fp32 at the cost of 3x more instructions"
  (Intel, "Lower Numerical Precision Deep Learning Inference and Training", 2018): 2 x 64 / 3 and 2 x 32 / 3.
* AMX-INT8: "2048 INT8 operations per cycle per core" on 4th Gen Xeon (Intel AMX overview, as cited by the
  Advanced Matrix Extensions article on Wikipedia): a 16x64 by 64x16 ``tdpbusd`` tile product (16,384 MACs)
  every 16 cycles = 1024 MACs/cycle.
* SSE-only x86 and ARM64: not measured by fastdpr; no peak is claimed.

The clock: the highest frequency the OS reports (``cpuinfo_max_freq`` under ``/sys/devices/system/cpu``)
when it is readable, else ``cpu MHz`` from ``/proc/cpuinfo``. Under a hypervisor (KVM) only the latter
exists and it is the nominal (TSC) clock: whether the core turbos above it is not known, so the peak can be
higher than stated and the % of peak correspondingly lower.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastdpr.common.errors import FastDPRError

_INTEL_VNNI = ("Intel: 'Introduction to Intel Deep Learning Boost on Second Generation Intel Xeon Scalable "
               "Processors' (2019; up to two 512-bit FMA units per core; VNNI fuses vpmaddubsw+vpmaddwd+vpaddd) "
               "and the Intel Intrinsics Guide, _mm512_dpbusd_epi32 (16 x 4 u8*s8 products)")
_INTEL_NO_VNNI = ("Intel: 'Lower Numerical Precision Deep Learning Inference and Training' (2018): u8*s8 "
                  "needs vpmaddubsw, vpmaddwd, vpaddd (3 instructions) on the two FMA ports")
_INTEL_AMX = ("Intel: 4th Gen Xeon AMX 'can perform 2048 INT8 operations per cycle' per core (as cited by "
              "Wikipedia, Advanced Matrix Extensions): tdpbusd 16x64 by 64x16 (16,384 MACs) per 16 cycles")


@dataclass(frozen=True)
class Int8Peak:
    """The int8 multiply-accumulates one core of a class can issue per cycle (None: not known)."""

    int8_class: str
    macs_per_cycle_per_core: float | None
    instruction: str
    derivation: str
    source: str


PEAKS: MappingProxyType[str, Int8Peak] = MappingProxyType({p.int8_class: p for p in (
    Int8Peak("x86-amx", 1024.0, "tdpbusd (AMX-INT8 tiles)", "16x16x64 MACs per tile product, one per 16 cycles",
             _INTEL_AMX),
    Int8Peak("x86-avx512-vnni", 128.0, "vpdpbusd zmm", "2 per cycle x 64 MACs (16 lanes x 4 u8*s8)", _INTEL_VNNI),
    Int8Peak("x86-avx-vnni", 64.0, "vpdpbusd ymm (VEX)", "2 per cycle x 32 MACs (8 lanes x 4 u8*s8)", _INTEL_VNNI),
    Int8Peak("x86-avx512", 128.0 / 3, "vpmaddubsw + vpmaddwd + vpaddd zmm",
             "64 MACs per 3 instructions, 2 per cycle", _INTEL_NO_VNNI),
    Int8Peak("x86-avx2", 64.0 / 3, "vpmaddubsw + vpmaddwd + vpaddd ymm", "32 MACs per 3 instructions, 2 per cycle",
             _INTEL_NO_VNNI),
    Int8Peak("x86-sse", None, "SSE kernels", "not measured by fastdpr", "none"),
    Int8Peak("arm64-dotprod", None, "sdot/udot", "not measured by fastdpr", "none"),
    Int8Peak("arm64", None, "NEON", "not measured by fastdpr", "none"),
    Int8Peak("unknown", None, "unknown", "the class is not known", "none"),
)})


class PeakError(FastDPRError):
    """No int8 peak can be stated for this machine (class without a figure, clock not readable)."""


@dataclass(frozen=True)
class Clock:
    """A core clock and where it was read."""

    ghz: float
    source: str
    note: str


@dataclass(frozen=True)
class MachinePeak:
    """The int8 peak of ``cores`` cores of this machine, in GOP/s (1 MAC = 2 ops)."""

    per_core: Int8Peak
    clock: Clock
    physical_cores: int

    @property
    def known(self) -> bool:
        """Whether the class has a per-cycle figure (else :meth:`gops` raises)."""
        return self.per_core.macs_per_cycle_per_core is not None

    def gops(self, threads: int) -> float:
        """Peak int8 GOP/s of ``threads`` threads (at most one per physical core: SMT siblings share units)."""
        macs = self.per_core.macs_per_cycle_per_core
        if macs is None:
            raise PeakError(f"no int8 peak is known for class {self.per_core.int8_class}")
        return 2 * macs * min(threads, self.physical_cores) * self.clock.ghz

    def to_dict(self) -> dict[str, Any]:
        """What a result file records: the table row, the clock and its source, the cores."""
        row = self.per_core
        return {"int8_class": row.int8_class, "macs_per_cycle_per_core": row.macs_per_cycle_per_core,
                "instruction": row.instruction, "derivation": row.derivation, "source": row.source,
                "clock_ghz": round(self.clock.ghz, 4), "clock_source": self.clock.source,
                "clock_note": self.clock.note, "physical_cores": self.physical_cores}


def read_clock(cpuinfo: Path = Path("/proc/cpuinfo"),
               cpufreq: Path = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")) -> Clock:
    """The core clock: ``cpuinfo_max_freq`` (kHz) when readable, else the mean ``cpu MHz`` of /proc/cpuinfo."""
    try:
        return Clock(int(cpufreq.read_text().strip()) / 1e6, str(cpufreq),
                     "the highest frequency the OS reports for cpu0")
    except (OSError, ValueError):
        pass
    try:
        mhz = [float(line.split(":", 1)[1]) for line in cpuinfo.read_text(encoding="utf-8").splitlines()
               if line.startswith("cpu MHz")]
    except OSError as exc:
        raise PeakError(f"cannot read the clock: {exc}") from exc
    if not mhz:
        raise PeakError(f"{cpuinfo} has no 'cpu MHz' line and {cpufreq} is not readable")
    return Clock(sum(mhz) / len(mhz) / 1000, f"{cpuinfo} 'cpu MHz' (mean over {len(mhz)} CPUs)",
                 "no cpufreq here (e.g. a VM): the reported, usually nominal clock; turbo is not known")


def physical_cores(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo (the logical CPU count when they are absent)."""
    import os

    cores: set[tuple[str, str]] = set()
    physical = ""
    try:
        lines = cpuinfo.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            physical = value.strip()
        elif key.strip() == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or (os.cpu_count() or 1)


def machine_peak(int8_class: str, clock: Clock | None = None, cores: int | None = None) -> MachinePeak:
    """The peak of this machine for ``int8_class`` (clock and cores read here unless given)."""
    if int8_class not in PEAKS:
        raise PeakError(f"unknown int8 class {int8_class!r}; known: {', '.join(PEAKS)}")
    return MachinePeak(PEAKS[int8_class], clock or read_clock(), cores or physical_cores())
