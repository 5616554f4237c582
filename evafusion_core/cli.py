"""The ``evafusion`` command line: fuse, measure, evaluate and benchmark without ComfyUI."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import EvaFusionError

log = logging.getLogger("evafusion")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="light", help="bundled name, baseline, local folder/file or Hub repo id")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", help="auto, fp32, fp16 or bf16 (reduced precision needs CUDA)")
    p.add_argument("--tile", type=int, default=None, help="fuse large images in tiles of this many pixels")


def _high_bit(args: argparse.Namespace):
    from .io import HighBitDepth

    return HighBitDepth(args.normalise, args.low, args.high)


def cmd_fuse(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .device import pick_device, pick_dtype
    from .hub import load_fusion_model
    from .inference import fuse
    from .io import find_pairs, load_pair, save_image, side_by_side

    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    model = load_fusion_model(args.model, device=device, work_size=args.work_size)
    ir_p, vis_p, out = Path(args.ir), Path(args.vis), Path(args.out)
    if ir_p.is_dir() != vis_p.is_dir():
        raise EvaFusionError(f"--ir {ir_p} and --vis {vis_p} must both be files or both be folders")
    if ir_p.is_dir():
        jobs = [(stem, a, b, out / f"{stem}.png") for stem, (a, b) in find_pairs(ir_p, vis_p)]
    else:
        target = out / f"{ir_p.stem}.png" if out.is_dir() or not out.suffix else out
        jobs = [(ir_p.stem, ir_p, vis_p, target)]
    if args.skip_existing:
        todo = [job for job in jobs if not job[3].exists()]
        if len(todo) < len(jobs):
            print(f"skipping {len(jobs) - len(todo)} pair(s) whose output already exists")
        jobs = todo
    failed: dict[str, str] = {}
    for stem, a, b, target in tqdm(jobs, desc="fusing", disable=len(jobs) < 2, unit="pair"):
        try:
            ir, vis = load_pair(a, b, resize=args.resize, high_bit=_high_bit(args))
        except EvaFusionError as exc:
            if not ir_p.is_dir():
                raise
            failed[stem] = str(exc)  # one bad pair in a folder of thousands should not stop the others
            continue
        fused = fuse(model, ir[None], vis[None], tile=args.tile, dtype=dtype)[0]
        save_image(fused, target)
        if args.side_by_side:
            sbs = side_by_side([ir, vis, fused], ["IR", "visible", f"fused ({args.model})"])
            save_image(sbs, target.with_name(f"{target.stem}_side_by_side.png"))
        if len(jobs) < 2:
            print(f"wrote {target}")
    if len(jobs) > 1:
        print(f"wrote {len(jobs) - len(failed)} fused images to {out}")
    return _report_skipped(failed, "pair")


def _report_skipped(failed: dict[str, str], what: str) -> int:
    """List what a folder run left out, with the reason, on stderr; the exit status says whether it was all."""
    if not failed:
        return 0
    print(f"error: {len(failed)} {what}(s) skipped:", file=sys.stderr)
    for stem, reason in failed.items():
        print(f"  {stem}: {reason}", file=sys.stderr)
    return 1


def _metrics_rows(ir_dir: Path, vis_dir: Path, fused_dir: Path, convention: str) -> tuple[dict, dict[str, str]]:
    """(metrics per stem, reason per skipped stem): an unreadable or mismatched triple is left out, not fatal."""
    from tqdm import tqdm

    from .io import find_pairs, load_u8
    from .metrics import compute_metrics

    rows, failed = {}, {}
    for stem, (a, b, f) in tqdm(find_pairs(ir_dir, vis_dir, fused_dir), desc="metrics", unit="image"):
        try:
            rows[stem] = compute_metrics(load_u8(a), load_u8(b), load_u8(f), convention=convention)
        except EvaFusionError as exc:
            failed[stem] = str(exc)
        except ValueError as exc:  # from the metrics, which know arrays, not files
            failed[stem] = f"{f}: {exc}"
    if not rows:
        raise EvaFusionError(f"no triple in {fused_dir} could be measured: {'; '.join(failed.values())}")
    return rows, failed


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def cmd_metrics(args: argparse.Namespace) -> int:
    from .evaluate import summarise
    from .io import atomic_write_bytes

    per_image, failed = _metrics_rows(Path(args.ir), Path(args.vis), Path(args.fused), args.convention)
    result = summarise(per_image, args.convention)
    names = list(result["mean"])
    rows = [[stem] + [f"{v[m]:.4f}" for m in names] for stem, v in result["images"].items()]
    rows.append(["**mean**"] + [f"{result['mean'][m]:.4f}" for m in names])
    print(_table(["image"] + names, rows))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(result, indent=2).encode())
        print(f"wrote {args.json}")
    return _report_skipped(failed, "triple")


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_dataset

    report = evaluate_dataset(
        Path(args.data), args.models.split(","), Path(args.out), convention=args.convention, device=args.device,
        tile=args.tile, examples=args.examples,
    )
    print(report.read_text())
    print(f"wrote {report} and per-model JSON, fused images and a contact sheet in {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    w, h = (int(v) for v in args.size.lower().split("x"))
    result = run_bench(args.models.split(","), width=w, height=h, device=args.device, repeats=args.repeats,
                       min_time=args.min_time)
    from .io import atomic_write_bytes

    print(f"bench {w}x{h} on {result['device']} ({result['cpu_cores']} cores, torch {result['torch']}, "
          f"{result['threads']} threads)")
    rows = [[n, f"{r['median_ms']:.1f}", str(r["runs"]), f"{r['parameters']:,}", f"{r['peak_memory_mb']:.0f}"]
            for n, r in result["models"].items()]
    print(_table(["model", "median_ms", "runs", "parameters", "peak_memory_mb"], rows))
    for note in result.get("notes", []):
        print(note)
    if args.json:
        atomic_write_bytes(args.json, json.dumps(result, indent=2).encode())
        print(f"wrote {args.json}")
    return 0


def cmd_run_workflow(args: argparse.Namespace) -> int:
    from .workflow import Progress, run_workflow

    def show(p: Progress) -> None:
        step = f" step {p.step}/{p.steps}" if p.steps else ""
        print(f"\r[{p.nodes_done}/{p.nodes_total}] {p.node or ''}{step}".ljust(60), end="", file=sys.stderr, flush=True)

    try:
        files = run_workflow(args.file, args.set, args.server, on_progress=show, server_args=args.server_arg)
    finally:
        print(file=sys.stderr)
    for f in files:
        print(f)
    if not files:
        print("the workflow finished and saved no files")
    return 0


def _reward_jobs(ir: Path, vis: Path, fused: Path) -> list[tuple[str, Path, Path, Path]]:
    from .io import find_pairs

    for flag, path in (("--ir", ir), ("--vis", vis), ("--fused", fused)):
        if not path.exists():
            raise EvaFusionError(f"{flag} {path}: no such file or folder")
    kinds = [p.is_dir() for p in (ir, vis, fused)]
    if any(kinds) and not all(kinds):
        raise EvaFusionError(f"--ir {ir}, --vis {vis} and --fused {fused} must all be files or all be folders")
    if all(kinds):
        return [(stem, a, b, f) for stem, (a, b, f) in find_pairs(ir, vis, fused)]
    return [(fused.stem, ir, vis, fused)]


def cmd_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .device import pick_device
    from .io import atomic_write_bytes, load_image, load_pair, resize_to, save_image
    from .reward import DIMENSIONS, load_reward_model

    jobs = _reward_jobs(Path(args.ir), Path(args.vis), Path(args.fused))
    model = load_reward_model(args.model, device=pick_device(args.device))
    images: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    for stem, a, b, f in tqdm(jobs, desc="scoring", disable=len(jobs) < 2, unit="image"):
        try:
            ir, vis = load_pair(a, b, resize=True)
            fused = load_image(f)
            if fused.shape[-2:] != vis.shape[-2:]:
                raise EvaFusionError(f"{f}: fused image is {fused.shape[2]}x{fused.shape[1]} but its sources are "
                                     f"{vis.shape[2]}x{vis.shape[1]} (width x height)")
        except EvaFusionError as exc:
            if len(jobs) == 1:
                raise
            failed[stem] = str(exc)  # as `fuse`: one bad triple in a folder should not stop the others
            continue
        out = model.predict(fused[None], ir[None], vis[None])
        images[stem] = {name: round(float(out[name][0]), 4) for name in DIMENSIONS}
        if args.heatmap_out:
            heat = out["heatmap"][0]
            save_image(heat if heat.shape[-2:] == fused.shape[-2:] else resize_to(heat, fused.shape[-2:]),
                       Path(args.heatmap_out) / f"{stem}.png")
    if not images:
        raise EvaFusionError(f"no triple could be scored: {'; '.join(failed.values())}")
    mean = {name: round(sum(v[name] for v in images.values()) / len(images), 4) for name in DIMENSIONS}
    result = {"images": images, "mean": mean}
    rows = [[stem] + [f"{v[n]:.2f}" for n in DIMENSIONS] for stem, v in images.items()]
    if len(images) > 1:
        rows.append(["**mean**"] + [f"{mean[n]:.2f}" for n in DIMENSIONS])
    print(_table(["image", *DIMENSIONS], rows))
    if args.heatmap_out:
        print(f"wrote {len(images)} heatmap(s) to {args.heatmap_out}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(result, indent=2).encode())
        print(f"wrote {args.json}")
    return _report_skipped(failed, "triple")


def cmd_eval_reward(args: argparse.Namespace) -> int:
    import time

    import torch

    from .data.hf_format import is_hf_folder, load_hf
    from .data.synthetic import BENCHMARK_LABELS
    from .device import pick_device
    from .reward import load_reward_model
    from .reward.evaluate import evaluate_reward, rank_check, synthetic_eval_set

    model = load_reward_model(args.model, device=pick_device(args.device))
    data = [Path(d) for d in args.data]
    extra: dict = {"model": str(args.model)}
    if len(data) == 1 and is_hf_folder(data[0]):
        ds = load_hf(data[0], args.hf_split)
        n = min(len(ds), args.max_samples) if args.max_samples else len(ds)
        samples, ladders = [ds[i] for i in range(n)], []
        extra["data"] = {"hf": str(data[0]), "split": args.hf_split}
    else:
        labels = args.labels or BENCHMARK_LABELS
        samples, ladders, keys = synthetic_eval_set(
            data, split=args.split, test_fraction=args.test_fraction, split_seed=args.split_seed, seed=args.seed,
            per_pair=args.per_pair, ladders_per_pair=args.ladders_per_pair, size=args.size or None,
            max_pairs=args.max_pairs, labels=labels,
        )
        extra["data"] = {"sets": [str(d) for d in data], "split": args.split, "pairs": keys,
                         "resolution": args.size or "native", "labels": labels}
    if args.rank_check:
        extra["rank_check"] = {}
        for d in data:
            if (d / "ir").is_dir():
                rc = rank_check(model, d, max_pairs=args.max_pairs)
                extra["rank_check"][d.name] = {k: v for k, v in rc.items() if k != "overall"}
    x = torch.rand(1, 3, 480, 640, device=next(model.parameters()).device)
    model.predict(x, x[:, :1], x)
    t0 = time.perf_counter()
    for _ in range(5):
        model.predict(x, x[:, :1], x)
    extra["speed"] = f"{(time.perf_counter() - t0) / 5 * 1000:.0f} ms per 640x480 triple on {x.device}"
    evaluate_reward(model, samples, args.out, ladders=ladders, examples=args.examples,
                    title=f"reward model {args.model}", extra=extra)
    report = Path(args.out) / "reward_eval.md"
    print(report.read_text())
    print(f"wrote {report}, reward_eval.json and example overlays in {args.out}")
    return 0


def cmd_train_reward(args: argparse.Namespace) -> int:
    from .reward.train import run_from_args

    return run_from_args(args)


def cmd_grpo(args: argparse.Namespace) -> int:
    from .grpo.config import run_config_from

    if args.time_step:
        from .grpo import time_one_step

        r = time_one_step(args.model or "light", args.reward or "small", size=args.time_size,
                          group_size=args.group_size or 8, mode=args.mode or "grpo", device=args.device or "cpu",
                          threads=args.threads or 0)
        print(f"one {r['mode']} step, {r['size']}x{r['size']} crop, G={r['group_size']}, model {r['model']}, "
              f"reward {r['reward']}, {r['device']} ({r['threads']} threads): {r['sec']:.3f} s median of "
              f"{r['repeats']} (mean/reference forward {r['t_forward']:.3f} s, regions {r['t_regions']:.3f} s, "
              f"sampling+reward {r['t_reward']:.3f} s, update {r['t_update']:.3f} s)")
        return 0
    from .grpo import run_training

    data = json.loads(Path(args.config).read_text()) if args.config else {}
    overrides = list(args.set)
    for key, value in (("grpo.mode", args.mode), ("steps", args.steps), ("out", args.out), ("model", args.model),
                       ("reward", args.reward), ("device", args.device), ("grpo.group_size", args.group_size),
                       ("threads", args.threads)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.data:
        overrides.append(f"data={json.dumps(args.data.split(','))}")
    out = run_training(run_config_from(data, overrides), resume=args.resume)
    print(f"wrote {out} (final/ holds the fine-tuned network; log.jsonl, eval.jsonl, plot.png, summary.json)")
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from .feedback import FeedbackStore, export_feedback_hf, feedback_stats, format_stats
    from .io import load_image

    store = FeedbackStore(args.dir)
    if args.action == "stats":
        if not store.records_path.is_file():
            raise EvaFusionError(f"{args.dir}: not a feedback folder (no {store.records_path.name})")
        stats = feedback_stats(store, skip_bad=args.skip_bad)
        print(format_stats(stats))
        if args.json:
            from .io import atomic_write_bytes

            atomic_write_bytes(args.json, json.dumps(stats, indent=2).encode())
        return 0
    if args.action == "export":
        counts = export_feedback_hf(store, args.out, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
                                    seed=args.seed, skip_bad=args.skip_bad)
        print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + " rows")
        return 0
    ir, vis = load_image(args.ir, grey=True), load_image(args.vis)
    if args.action == "rate":
        scores = [float(v) for v in args.scores.split(",")]
        mask = load_image(args.mask, grey=True)[0] if args.mask else None
        rec = store.add_rating(load_image(args.fused), ir, vis, scores, annotator=args.annotator, mask=mask,
                               model=args.model, pair=Path(args.fused).stem)
    else:
        rec = store.add_preference(load_image(args.a), load_image(args.b), ir, vis, args.choice,
                                   annotator=args.annotator, reason=args.reason, model_a=args.model_a,
                                   model_b=args.model_b, pair=Path(args.a).stem)
    print(f"recorded {rec['kind']} {rec['id']} (version {rec['version']}) in {store.records_path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_comfy_inputs, write_demo_pair

    out = Path(args.out).resolve()
    if args.no_comfyui:
        ir, vis = write_demo_pair(out / "demo_pair")
        print(f"wrote demo pair {ir} and {vis}")
        # Through the parser, so that every option of `fuse` has its default.
        return cmd_fuse(build_parser().parse_args(["fuse", "--ir", str(ir), "--vis", str(vis), "--out",
                                                   str(out / "fused_demo.png"), "--model", args.model,
                                                   "--device", args.device, "--side-by-side"]))

    from .demo import WORKFLOWS_DIR, demo_side_by_side
    from .workflow import run_workflow

    inputs, outputs = out / "comfyui" / "input", out / "comfyui" / "output"
    write_comfy_inputs(inputs)
    workflow = WORKFLOWS_DIR / "score_and_heatmap.json"  # fuse, save, score and map artifacts
    print(f"running {workflow} on a local ComfyUI (inputs in {inputs})", flush=True)
    files = run_workflow(workflow, [f"2.model={json.dumps(args.model)}"],
                         server_args=["--input-directory", str(inputs), "--output-directory", str(outputs)])
    for f in files:
        print(f"wrote {f}")
    fused = next(f for f in files if f.name.startswith("fused"))
    sbs = demo_side_by_side(inputs, fused, out / "demo_side_by_side.png")
    print(f"wrote {sbs} (IR | visible | fused)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .metrics import CONVENTIONS

    ap = argparse.ArgumentParser(prog="evafusion", description="Infrared-visible image fusion aligned with people.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fuse", help="fuse an IR/visible pair, or two folders of pairs matched by file stem")
    p.add_argument("--ir", required=True, help="IR image or folder")
    p.add_argument("--vis", required=True, help="visible image or folder")
    p.add_argument("--out", required=True, help="output file (single pair) or folder")
    _add_model_args(p)
    p.add_argument("--work-size", type=int, default=None,
                   help="light only: fuse frames larger than this (long side, e.g. 640) at this size and add the "
                        "full-resolution detail back (faster on HD frames, as sharp); 0 = off")
    p.add_argument("--resize", action="store_true", help="resize IR to the visible size instead of failing")
    p.add_argument("--side-by-side", action="store_true", help="also write IR | visible | fused as a PNG")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave pairs whose output already exists (to continue an interrupted folder run)")
    p.add_argument("--normalise", default="percentile", choices=("percentile", "minmax", "fixed"),
                   help="how 16-bit images are mapped to 0..1")
    p.add_argument("--low", type=float, default=0.5, help="lower percentile for --normalise percentile")
    p.add_argument("--high", type=float, default=99.5, help="upper percentile for --normalise percentile")
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("metrics", help="objective fusion metrics of fused images against their sources")
    p.add_argument("--ir", required=True)
    p.add_argument("--vis", required=True)
    p.add_argument("--fused", required=True)
    p.add_argument("--convention", default="tang", choices=CONVENTIONS)
    p.add_argument("--json", help="also write the results as JSON here")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("eval", help="fuse and score a dataset (DIR/ir, DIR/vi) with several models")
    p.add_argument("--data", required=True, help="folder with ir/ and vi/ subfolders")
    p.add_argument("--models", default="light,average,max,laplacian")
    p.add_argument("--out", default="out/eval", help="where fused images, JSON, the table and the sheet go")
    p.add_argument("--convention", default="tang", choices=CONVENTIONS)
    p.add_argument("--device", default="auto")
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--examples", type=int, default=4, help="pairs shown in the contact sheet")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="speed, size and memory of fusion models")
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    p.add_argument("--models", default="light,dcevo,average,laplacian")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=20, help="timed runs at most per model")
    p.add_argument("--min-time", type=float, default=1.0, help="stop timing a model after this many seconds")
    p.add_argument("--json", help="also write the results as JSON here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("score", help="reward-model scores (and artifact heatmaps) of fused images")
    p.add_argument("--ir", required=True, help="IR image or folder")
    p.add_argument("--vis", required=True, help="visible image or folder")
    p.add_argument("--fused", required=True, help="fused image or folder (matched to the sources by file stem)")
    p.add_argument("--model", default="small", help="bundled name, local folder or Hub repo id")
    p.add_argument("--device", default="auto")
    p.add_argument("--heatmap-out", help="write each artifact heatmap as a grey PNG named by stem here")
    p.add_argument("--json", help="also write the scores as JSON here")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("eval-reward", help="evaluate a reward model on held-out synthetic artifacts or an HF folder")
    p.add_argument("--data", required=True, nargs="+",
                   help="IVIF set folders (ir/, vi/, fused/<Method>/) or one human-feedback (HF datasets) folder")
    p.add_argument("--model", default="small", help="reward model: bundled name, local folder or Hub repo id")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default="out/eval_reward",
                   help="where reward_eval.json, reward_eval.md (with errors by artifact) and example overlays go")
    p.add_argument("--split", default="test", choices=("test", "all", "train"),
                   help="test: the source pairs training held out; all: every pair (sets never trained on); "
                        "train: the pairs training saw")
    p.add_argument("--test-fraction", type=float, default=0.15, help="as in the training config's split")
    p.add_argument("--split-seed", type=int, default=0, help="as in the training config's split")
    p.add_argument("--seed", type=int, default=1234, help="seed of the synthetic evaluation samples")
    p.add_argument("--per-pair", type=int, default=8, help="synthetic samples per source pair")
    p.add_argument("--ladders-per-pair", type=int, default=2, help="strength ladders per pair (pairwise accuracy)")
    p.add_argument("--size", type=int, default=0, help="work at SIZE x SIZE instead of native resolution")
    p.add_argument("--labels", default=None, choices=("relative", "retention", "targets"),
                   help="relative: every clean fusion scores 5; retention: clean fusions also lose Thermal and "
                        "Texture points for the IR contrast and visible detail they do not keep; targets (default, "
                        "what the bundled model learnt last): retention that also sees small thermal targets")
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--max-samples", type=int, default=None, help="HF folders: evaluate at most this many rows")
    p.add_argument("--hf-split", default="test", help="HF folders: which split")
    p.add_argument("--examples", type=int, default=6, help="example heatmap overlays to write")
    p.add_argument("--rank-check", action="store_true",
                   help="also check IR alone, visible alone and a blurred average rank below light fusion")
    p.set_defaults(func=cmd_eval_reward)

    p = sub.add_parser("train-reward", help="train the reward model (also under torchrun for several processes)")
    from .reward.train import add_train_args

    add_train_args(p)
    p.set_defaults(func=cmd_train_reward)

    p = sub.add_parser("grpo", help="fine-tune a fusion network against the reward model (GRPO, global, ReFL)")
    p.add_argument("--data", help="training folders with ir/ and vi/ (comma separated)")
    p.add_argument("--model", help="network to fine-tune: bundled name, folder or Hub id (default light)")
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--mode", choices=("grpo", "global", "refl"), help="region GRPO, its global ablation, or ReFL")
    p.add_argument("--reward", help="reward model: bundled name (small), folder or Hub id")
    p.add_argument("--out", help="run folder (checkpoint, logs, plot, final/)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--group-size", type=int, help="samples per input (G)")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads per process (1 is fastest on a busy machine)")
    p.add_argument("--config", help="JSON run config (e.g. training/configs/grpo_light.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override any config value, e.g. --set grpo.beta=0.1 (repeatable)")
    p.add_argument("--time-step", action="store_true", help="time one step on a square crop and exit")
    p.add_argument("--time-size", type=int, default=256, help="crop size for --time-step")
    p.set_defaults(func=cmd_grpo)

    p = sub.add_parser("feedback", help="human ratings and preferences: record, summarise, export")
    fsub = p.add_subparsers(dest="action", required=True)
    q = fsub.add_parser("stats", help="counts per annotator and dimension, agreement between annotators")
    q.add_argument("dir", help="feedback folder (written by Rate Fusion / Compare Fusions)")
    q.add_argument("--json", help="also write the figures as JSON here")
    q.add_argument("--skip-bad", action="store_true", help="skip (and list) bad lines instead of stopping")
    q.set_defaults(func=cmd_feedback)
    q = fsub.add_parser("export", help="write the ratings in the original human-feedback format")
    q.add_argument("dir", help="feedback folder")
    q.add_argument("out", help="new output folder (HF datasets save_to_disk)")
    q.add_argument("--format", choices=("hf",), default="hf", help="hf: the original dataset's format")
    q.add_argument("--dev-fraction", type=float, default=0.1, help="share of source pairs in the dev split")
    q.add_argument("--test-fraction", type=float, default=0.1, help="share of source pairs in the test split")
    q.add_argument("--seed", type=int, default=0, help="seed of the split by source pair")
    q.add_argument("--skip-bad", action="store_true", help="skip (and list) bad lines instead of stopping")
    q.set_defaults(func=cmd_feedback)
    q = fsub.add_parser("rate", help="record a rating from the command line (safe beside ComfyUI writers)")
    q.add_argument("dir", help="feedback folder")
    q.add_argument("--fused", required=True)
    q.add_argument("--ir", required=True)
    q.add_argument("--vis", required=True)
    q.add_argument("--scores", required=True, help="five values 1-5: thermal,texture,artifacts,sharpness,overall")
    q.add_argument("--annotator", required=True)
    q.add_argument("--mask", help="grey image, white where artifacts are")
    q.add_argument("--model", default="", help="name of the fusion model that made the image")
    q.set_defaults(func=cmd_feedback)
    q = fsub.add_parser("prefer", help="record which of two fusions of one pair is better")
    q.add_argument("dir", help="feedback folder")
    q.add_argument("--a", required=True, help="fused image A")
    q.add_argument("--b", required=True, help="fused image B")
    q.add_argument("--ir", required=True)
    q.add_argument("--vis", required=True)
    q.add_argument("--choice", required=True, choices=("A", "B", "tie"))
    q.add_argument("--annotator", required=True)
    q.add_argument("--reason", default="")
    q.add_argument("--model-a", default="")
    q.add_argument("--model-b", default="")
    q.set_defaults(func=cmd_feedback)

    p = sub.add_parser("run-workflow", help="run a saved ComfyUI workflow (browser or API format) headless")
    p.add_argument("file", help="workflow JSON")
    p.add_argument("--set", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                   help="override a node input (repeatable); VALUE is parsed as JSON when it can be")
    p.add_argument("--server", help="URL of a running ComfyUI; default: start a local one for this run")
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for the local server")
    p.set_defaults(func=cmd_run_workflow)

    p = sub.add_parser("demo", help="write the procedural demo pair and fuse it")
    p.add_argument("--out", default="out")
    p.add_argument("--model", default="light")
    p.add_argument("--device", default="auto", help="only with --no-comfyui")
    p.add_argument("--no-comfyui", action="store_true", help="fuse with the library directly, without ComfyUI")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .workflow import WorkflowError

    try:
        return args.func(args)
    except (EvaFusionError, WorkflowError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
