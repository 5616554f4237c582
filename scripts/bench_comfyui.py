"""Benchmark the example workflows through a real ComfyUI server (CPU).

    .venv/bin/python scripts/bench_comfyui.py [--runs 5]

Prints the server's start-up time and, per workflow, the median wall time from queueing
the prompt to its completion (the server runs with --cache-none so every run recomputes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.demo import WORKFLOWS_DIR, write_comfy_inputs  # noqa: E402
from evafusion_core.workflow import ComfyServer, run_prompt  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workflows", default="fuse_pair,fuse_compare_metrics,fuse_folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "input", Path(tmp) / "output"
        write_comfy_inputs(inputs)
        t0 = time.perf_counter()
        with ComfyServer(["--cache-none", "--input-directory", str(inputs), "--output-directory", str(outputs)]) as s:
            print(f"server start-up: {time.perf_counter() - t0:.2f} s")
            for name in args.workflows.split(","):
                api = json.loads((WORKFLOWS_DIR / "api" / f"{name}.json").read_text())
                times = []
                for _ in range(args.runs + 1):  # the first run loads models and warms up
                    t = time.perf_counter()
                    run_prompt(s.url, api)
                    times.append(time.perf_counter() - t)
                median = statistics.median(times[1:])
                print(f"{name}: first run {times[0]:.2f} s, median of next {args.runs} {median:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
