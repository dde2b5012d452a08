"""Weights footprint of a loaded model, and the worker's peak memory."""
from __future__ import annotations

import resource
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from evalq.measure.torch_model import measured


def weights_footprint(model: Any) -> int:
    """Bytes held by the model's weights: parameters, buffers, and the scale
    tensors bitsandbytes keeps beside its packed weights (NF4 absmax and
    double-quant constants, LLM.int8 row scales SCB). Tied weights count once."""
    return measured(model).weights_bytes()


def module_types(model: Any) -> dict[str, int]:
    """Count of the linear-like module classes: evidence of what was really loaded."""
    return measured(model).module_types()


def quantized_modules(model: Any) -> int:
    """Modules whose class comes from a quantization library rather than torch or
    transformers (bitsandbytes' Linear8bitLt/Linear4bit, gptqmodel's QuantLinear...);
    for a GGUF, the matrices of a quantized ggml type."""
    return measured(model).quantized_modules()


def parameter_dtypes(model: Any) -> dict[str, int]:
    return measured(model).tensor_types()


def current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory.

    VmHWM, not ru_maxrss: ru_maxrss survives execve, so a worker forked from a
    larger parent would report the parent's peak as its own."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux, bytes on macOS


class NvmlSampler:
    """Peak GPU memory of this process as the driver sees it (includes the
    CUDA context and non-PyTorch allocations), sampled every 20 ms."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.02):
        import os

        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self._pid = os.getpid()
        self._interval = interval_s
        self.process_peak = 0
        self.device_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        nv = self._nvml
        for proc in nv.nvmlDeviceGetComputeRunningProcesses(self._handle):
            if proc.pid == self._pid and proc.usedGpuMemory:
                self.process_peak = max(self.process_peak, proc.usedGpuMemory)
        self.device_peak = max(self.device_peak, nv.nvmlDeviceGetMemoryInfo(self._handle).used)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def reset(self) -> None:
        self.process_peak = 0
        self.device_peak = 0

    def peaks(self) -> dict[str, int]:
        self._sample()
        return {"nvml_process_peak_bytes": self.process_peak, "nvml_device_used_peak_bytes": self.device_peak}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def release_free_heap() -> None:
    """Collect garbage and hand the allocator's free pages back to the OS (glibc's
    malloc_trim), so a phase's peak starts from the memory still in use, not from
    what an earlier phase freed but the heap kept: that retained slack varied by
    600 MB between identical runs of one cell after lm-eval's scoring."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory per phase of a cell, and over all of them.

    CPU: peak RSS (VmHWM, reset between phases). GPU: torch.cuda max allocated
    and reserved (reset between phases) and the NVML process peak. Per phase,
    because lm-eval's batched log-likelihoods over a large vocabulary can need
    far more memory than serving the model does: `by_phase["speed"]` is the
    cost of generating, the overall peak is what the whole cell needed.
    """

    def __init__(self, device: str):
        self.device = device
        self.by_phase: dict[str, dict[str, int]] = {}
        self.resettable = True
        self._nvml: NvmlSampler | None = None
        if device == "cuda":
            try:
                import torch

                self._nvml = NvmlSampler(torch.cuda.current_device())
            except Exception:  # noqa: BLE001 - NVML is optional (nvidia-ml-py missing, no permission)
                self._nvml = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._reset()
        try:
            yield
        finally:
            self.by_phase[name] = self._read()

    def _reset(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            release_free_heap()
            torch.cuda.empty_cache()  # likewise the caching allocator's free blocks
            torch.cuda.reset_peak_memory_stats()
            if self._nvml:
                self._nvml.reset()
        else:
            release_free_heap()
        self.resettable = reset_peak_rss() and self.resettable

    def _read(self) -> dict[str, int]:
        out = {"peak_rss_bytes": peak_rss_bytes()}
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            out["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
            if self._nvml:
                out.update(self._nvml.peaks())
            out["peak_memory_bytes"] = out.get("nvml_process_peak_bytes") or out["cuda_max_reserved_bytes"]
        else:
            out["peak_memory_bytes"] = out["peak_rss_bytes"]
        return out

    def finish(self) -> dict[str, Any]:
        if self._nvml:
            self._nvml.stop()
        keys = {k for p in self.by_phase.values() for k in p}
        overall: dict[str, Any] = {k: max(p.get(k, 0) for p in self.by_phase.values()) for k in keys}
        overall["by_phase"] = self.by_phase
        overall["phase_peaks_resettable"] = self.resettable
        overall["rss_bytes"] = current_rss_bytes()
        return overall
