"""Issue #10: the int8 kernel class is read from the CPU's flags, named in every measurement, and can be
overridden (for emulators, whose CPUID differs from /proc/cpuinfo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastdpr.common.cpu import CPU_CLASS_ENV, INT8_CLASSES, classify, detect
from fastdpr.common.errors import FastDPRError

# Flag sets as /proc/cpuinfo shows them on the machines of this workplace's pool (trimmed).
EPYC_AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni"
EPYC_VNNI = EPYC_AVX2 + " avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"
XEON_AMX = EPYC_VNNI + " avx_vnni amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize(("machine", "flags", "expected"), [
    ("x86_64", XEON_AMX, "x86-amx"),
    ("x86_64", EPYC_VNNI, "x86-avx512-vnni"),
    ("x86_64", EPYC_AVX2 + " avx_vnni", "x86-avx-vnni"),
    ("x86_64", EPYC_AVX2 + " avx512f avx512bw", "x86-avx512"),
    ("x86_64", EPYC_AVX2, "x86-avx2"),
    ("x86_64", "fpu sse sse2 sse4_2 avx", "x86-sse"),
    ("aarch64", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp", "arm64-dotprod"),
    ("aarch64", "fp asimd", "arm64"),
    ("riscv64", "", "unknown"),
])
def test_classify(machine: str, flags: str, expected: str) -> None:
    assert classify(machine, frozenset(flags.split())) == expected


def test_saturation_is_known_where_measured() -> None:
    """The classes whose U8S8 kernels sum pairs into saturating int16 are exactly the non-VNNI x86 ones."""
    saturating = {name for name, c in INT8_CLASSES.items() if c.pairwise_int16_saturation}
    exact = {name for name, c in INT8_CLASSES.items() if c.pairwise_int16_saturation is False}
    assert saturating == {"x86-avx2", "x86-avx512"}
    assert exact == {"x86-amx", "x86-avx512-vnni", "x86-avx-vnni"}


def test_detect_reads_cpuinfo_and_the_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: {EPYC_AVX2}\n\n", encoding="utf-8")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.delenv(CPU_CLASS_ENV, raising=False)
    info = detect(cpuinfo)
    assert (info.int8_class, info.model, info.source) == ("x86-avx2", "AMD EPYC 7B13", "cpuinfo")
    assert info.flags == ("avx2",)
    assert info.to_dict()["pairwise_int16_saturation"] is True

    monkeypatch.setenv(CPU_CLASS_ENV, "x86-avx512-vnni")
    info = detect(cpuinfo)
    assert (info.int8_class, info.source) == ("x86-avx512-vnni", CPU_CLASS_ENV)

    monkeypatch.setenv(CPU_CLASS_ENV, "pentium")
    with pytest.raises(FastDPRError, match="not an int8 class"):
        detect(cpuinfo)


def test_detect_without_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPU_CLASS_ENV, raising=False)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert detect(tmp_path / "missing").int8_class == "x86-sse"  # no flags known: no claim of AVX2
