"""What this CPU computes natively, and the dtype `auto` means on it.

PyTorch emulates bfloat16 (and float16) on a CPU without bf16 instructions: on
an AVX2-only machine a 64×576×1536 matmul at 1 thread ran 55.6 GFLOP/s in
float32, 7.4 in bfloat16 and 8.5 in float16. So `dtype: auto` on the CPU is
bfloat16 only where the CPU has bf16 arithmetic (x86 AVX512_BF16 or AMX-BF16,
Arm's BF16 extension), float32 elsewhere.
"""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

# Flags (x86 /proc/cpuinfo "flags", Arm "Features") that make a bf16 matmul native.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# The flags worth recording with a cell: they decide kernels, speed and dtype.
RECORDED_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                  "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile", "neon", "asimd", "sve", "bf16", "i8mm")

# The flags that put a machine in another hardware class (env.hardware_class): they
# change which kernels run, hence the numbers (accuracy moved 0.8 to 6 points between
# an AVX-512 and an AVX2 machine). A subset of RECORDED_FLAGS, so a stored env gives the class back.
HARDWARE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
                  "asimd", "sve", "bf16", "i8mm")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def auto_cpu_dtype(flags: frozenset[str] | None = None) -> str:
    """The dtype `auto` means on this CPU: bfloat16 where it is native, else float32."""
    return "bfloat16" if native_bf16(flags) else "float32"


def cpu_features() -> dict[str, object]:
    """Recorded with every cell: the flags that matter, and what `auto` chose."""
    flags = cpu_flags()
    return {
        "machine": platform.machine(),
        "flags": sorted(f for f in RECORDED_FLAGS if f in flags),
        "native_bf16": native_bf16(flags),
        "auto_dtype": auto_cpu_dtype(flags),
    }
