"""What this machine runs fast: the automatic choice of numeric precision (`trainer.precision=auto`)."""

from __future__ import annotations

from pathlib import Path

# CPU features that run bfloat16 matrix work natively (Intel AMX, AVX512-BF16); without them
# PyTorch emulates bf16 on the CPU, several times slower than fp32.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo; empty where there is no such file."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_accelerator(accelerator: str) -> str:
    """Lightning's own choice for `auto`: a CUDA GPU when there is one, else Apple's MPS, else the CPU."""
    import torch

    if accelerator not in ("auto", None):
        return "cuda" if accelerator == "gpu" else accelerator
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def auto_precision(accelerator: str) -> tuple[str, str]:
    """(precision, reason): bf16-mixed where the hardware runs bf16 natively, 32-true elsewhere."""
    import torch

    kind = resolve_accelerator(accelerator)
    if kind == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        name = torch.cuda.get_device_name()
        if major >= 8:  # Ampere and newer: bf16 tensor cores
            return "bf16-mixed", f"{name} (compute capability {major}.{minor}) has bf16 tensor cores"
        return "32-true", f"{name} (compute capability {major}.{minor}) has no bf16 tensor cores"
    if kind == "cpu":
        found = sorted(cpu_flags().intersection(CPU_BF16_FLAGS))
        if found:
            return "bf16-mixed", f"the CPU has {', '.join(found)}"
        return "32-true", "the CPU has neither AMX-BF16 nor AVX512-BF16 (bf16 would be emulated, slower than fp32)"
    return "32-true", f"accelerator {kind}: fp32 is the safe choice"
