"""Speed benchmark: median milliseconds per fused pair, parameters and peak memory per model.

Each model runs in a fresh child process so that its peak memory (resident set on
the CPU, allocator peak on CUDA) is its own and not the high-water mark of a model
measured before it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import statistics
import time

import torch


def _measure(name: str, width: int, height: int, device: str, repeats: int, min_time: float, queue) -> None:
    from .device import pick_device
    from .hub import load_fusion_model
    from .inference import fuse
    from .models import ARCHITECTURES, create_model

    dev = pick_device(device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    note = None
    try:
        model = load_fusion_model(name, device=dev)
    except Exception:  # noqa: BLE001 - an architecture without bundled weights is timed untrained
        if name not in ARCHITECTURES:
            raise
        model = create_model(name).eval().to(dev)
        note = f"{name}: no bundled weights, timed with random initialisation (speed does not depend on weights)"
    g = torch.Generator().manual_seed(0)
    ir, vis = torch.rand(1, 1, height, width, generator=g), torch.rand(1, 3, height, width, generator=g)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def once() -> float:
        t0 = time.perf_counter()
        fuse(model, ir, vis)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return (time.perf_counter() - t0) * 1000.0

    with torch.inference_mode():
        once()  # warm-up: allocator, oneDNN kernel selection, CUDA context
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats and (not times or time.perf_counter() - start < min_time):
            times.append(once())
    peak = (
        torch.cuda.max_memory_allocated(dev) / 2**20
        if dev.type == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024.0
    )
    queue.put({"name": name, "median_ms": statistics.median(times), "runs": len(times),
               "parameters": sum(p.numel() for p in model.parameters()), "peak_memory_mb": peak, "note": note})


def run_bench(
    models: list[str], *, width: int = 640, height: int = 480, device: str = "cpu", repeats: int = 20,
    min_time: float = 1.0,
) -> dict:
    """Benchmark each model in its own process; returns a JSON-able dict (see ``evafusion bench``)."""
    ctx = mp.get_context("spawn")
    result = {"size": [width, height], "device": device, "cpu_cores": os.cpu_count(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
              "models": {}, "notes": []}
    for name in models:
        q = ctx.Queue()
        p = ctx.Process(target=_measure, args=(name, width, height, device, repeats, min_time, q))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"benchmark of {name!r} failed in its child process (exit code {p.exitcode})")
        r = q.get()
        if r.pop("note"):
            result["notes"].append(f"{name}: no bundled weights, timed with random initialisation")
        result["models"][r.pop("name")] = r
    light, dcevo = result["models"].get("light"), result["models"].get("dcevo")
    if light and dcevo:
        result["speedup_light_vs_dcevo"] = dcevo["median_ms"] / light["median_ms"]
        result["notes"].append(f"light is {result['speedup_light_vs_dcevo']:.0f}x faster than dcevo")
    return result
