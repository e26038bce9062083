"""Speed, memory and MFU benchmark of tinyclip training ("Scaling (Down) CLIP", Li, Xie, Cubuk 2024).

The paper's x-axis is compute (GFLOPs per sample x samples seen); this script says what that compute costs on
the machine at hand (CUDA if present, else CPU): steady-state training samples/s (the batch in memory; the
median of clean timed windows after warm-up steps), peak memory, GFLOPs/sample (tinyclip.flops, forward +
backward, as train.py logs it), TFLOP/s and MFU against the dense matmul peak measured in the same run and
precision; eval images/s; tokenizer texts/s; decode + augment images/s per loader worker; the training
loader's images/s.

It measures training through train.py's documented surface alone: a configuration is train.py's own flags
(tinyclip.train_flags.parse_args), built by train.make_model and train.make_optimizer (compiled in place with
--compile, as train.py does), and timed through train.train_step, one whole optimiser step (forward, loss,
backward, through the gradient cache with --accum-steps, clipping, update, temperature clamp);
train_flags.STRATEGIES gives a strategy's masking. Each configuration runs in a fresh subprocess, for a clean
memory high-water mark. scripts/measure.py holds how it measures (clean windows, memory, the matmul peak) and
what it measures without train.py (eval, the loss's memory, tokenizer, data).

  --study sweep    (default) --archs x --strategies x --precisions x --batch-sizes; per arch, a step with
                   SigLIP's sigmoid loss and one with LiT's locked image tower timed beside the plain one;
                   eval, tokenizer, data
  --study accum    plain, --accum-steps K in {2, 4, 8}, --grad-checkpointing and both: samples/s, peak
                   memory, the largest global batch within --memory-budget-gb (extrapolated from the
                   peaks at B and B/2 plus the measured B x B cost of the loss)

    python scripts/bench.py --quick
    python scripts/bench.py --archs vit-s-16,vit-b-32 --precisions fp32,bf16 --batch-sizes 32 --markdown b.md
    python scripts/bench.py --study accum --archs vit-ti-16 --batch-sizes 512 --memory-budget-gb 16
"""

import argparse
import datetime
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # train.py and tinyclip/ live at the repo root

import torch  # noqa: E402

import measure  # noqa: E402
import train  # noqa: E402
from measure import LoadMeter, device_now, memory_now, peak_memory_mb  # noqa: E402
from tinyclip.flops import gflops_per_sample  # noqa: E402
from tinyclip import train_flags  # noqa: E402


# --- one configuration, in a fresh worker process -------------------------------------------------

def train_args(cfg, **changes):
    """train.py's own flags for a benchmark configuration, the defaults filled by parse_args."""
    cfg = {**cfg, **changes}
    argv = ["--arch", cfg["arch"], "--strategy", cfg["strategy"], "--precision", cfg["precision"],
            "--batch-size", str(cfg["batch"]), "--accum-steps", str(cfg.get("accum", 1)),
            "--image-size", str(cfg["image_size"]), "--context-length", str(cfg["context_length"]),
            "--data", "in-memory"]  # not "synthetic", whose defaults (a small text tower) replace the preset's
    if cfg.get("text_arch"):
        argv += ["--text-arch", cfg["text_arch"]]
    if cfg.get("grad_checkpointing"):
        argv.append("--grad-checkpointing")
    if cfg.get("compile"):
        argv.append("--compile")
    return train_flags.parse_args(argv + cfg.get("flags", []))


def build(args, device):
    """The model and optimiser train.py builds from these flags (--lock-image needs no --init to be timed)."""
    torch.manual_seed(0)
    model = train.make_model(args).to(device).train()
    optimizer = train.make_optimizer(args, model)
    if args.compile:  # in place, as train.py --compile; the warm-up steps absorb the compilation
        model.compile()
    return model, optimizer


def run_train(cfg):
    """Samples/s and GFLOPs/sample of each variant {"name", "flags"} (by default the configuration itself,
    "train"), timed in turns; peak memory, of every model built: variants share one, but extra train.py flags
    (["--loss", "sigmoid"] adds a parameter, ["--lock-image"] freezes a tower) get their own."""
    device, meter = device_now(), LoadMeter()
    args = train_args(cfg)
    _, mask_ratio, _ = train_flags.STRATEGIES[args.strategy](args)
    base = memory_now(device)
    models = {(): build(args, device)}  # (model, optimiser) by a variant's extra flags
    model = models[()][0]  # the configuration's own: the batch's shapes, the parameter count
    batch, steps, gflops = measure.memory_batch(model, args.batch_size, device), {}, {}
    for v in cfg.get("variants") or [{"name": "train", "flags": []}]:
        v_args = train_args(cfg, flags=v["flags"])
        if tuple(v["flags"]) not in models:
            models[tuple(v["flags"])] = build(v_args, device)
        v_model, v_optimizer = models[tuple(v["flags"])]
        scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
        # one step exactly as train.py's loop runs it (no DDP here: the model is its own raw model)
        steps[v["name"]] = lambda a=v_args, s=scaler, net=v_model, opt=v_optimizer: train.train_step(
            net, net, batch, mask_ratio, opt, s, a)
        # a locked image tower counts its forward only (flops.py reads model.image_locked)
        gflops[v["name"]] = gflops_per_sample(v_model, strategy=args.strategy, mask_ratio=mask_ratio)["total"]
    timing = measure.timed(steps, args.batch_size, cfg, device)
    return {"variants": {name: {"precision": args.precision, "strategy": args.strategy, "gflops": gflops[name], **t}
                         for name, t in timing.items()}, "other_load": meter.others(),
            "peak_mb": round(peak_memory_mb(device, base), 1),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


WORKERS = {"train": run_train, "eval": measure.run_eval, "loss_memory": measure.run_loss_memory}


def in_subprocess(cfg, opts):
    """One configuration's worker (WORKERS) in a fresh interpreter, so that its peak resident set (a high-water
    mark since the process started) is that measurement's alone: the JSON of the worker's last stdout line, or
    {"error": its last stderr line}; logged as it ends."""
    argv = [sys.executable, Path(__file__).resolve(), "--worker", json.dumps(cfg), "--max-wait", str(opts.max_wait)]
    if opts.threads:
        argv += ["--threads", str(opts.threads)]
    if opts.default_malloc:
        argv.append("--default-malloc")
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode == 0:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        result = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    name = " ".join(str(cfg[k]) for k in ("kind", "arch", "strategy", "precision", "batch") if k in cfg)
    print(f"{name}: {result}", file=sys.stderr, flush=True)
    return result


def train_row(cfg, opts, **changes):
    """One training configuration's figures, flat: its one variant's rate and GFLOPs, and peak memory."""
    result = in_subprocess({**cfg, **changes}, opts)
    return {**result.pop("variants", {}).get("train", {}), **result}


# --- the studies ----------------------------------------------------------------------------------

def base_cfg(opts, arch, strategy, precision, batch, **extra):
    return dict(kind="train", arch=arch, strategy=strategy, precision=precision, batch=batch,
                image_size=opts.image_size, context_length=opts.context_length, text_arch=opts.text_arch,
                warmup=opts.warmup, windows=opts.windows, steps=opts.steps_per_window,
                max_other_load=opts.max_other_load, **extra)


def peaks(opts):
    """{precision: the dense matmul peak in TFLOP/s}, measured now."""
    return {p: measure.matmul_peak_tflops(device_now(), p, opts.peak_sizes, max_other_load=opts.max_other_load)
            for p in opts.precisions}


# steps that differ from the plain one by train.py flags; each gets its own model (see run_train)
STEP_VARIANTS = {"plain": [], "sigmoid loss": ["--loss", "sigmoid"], "locked image": ["--lock-image"]}


def study_sweep(opts, report):
    report["peak_tflops"], report["train"] = peaks(opts), []
    for arch, strategy, precision, batch in itertools.product(opts.archs, opts.strategies, opts.precisions,
                                                              opts.batch_sizes):
        cfg = base_cfg(opts, arch, strategy, precision, batch, accum=opts.accum_steps,
                       grad_checkpointing=opts.grad_checkpointing, compile=opts.compile)
        report["train"].append({"arch": arch, "batch": batch, "compile": opts.compile, **train_row(cfg, opts)})
    report["step_variants"] = []
    for arch in opts.archs:  # SigLIP's loss and LiT's locked tower: what each costs beside the plain step
        variants = [{"name": name, "flags": flags} for name, flags in STEP_VARIANTS.items()]
        cfg = base_cfg(opts, arch, "clip", opts.precisions[0], opts.batch_sizes[0], variants=variants)
        result = in_subprocess(cfg, opts)
        timed = result.get("variants", {"-": result})  # a failed run: one row, with its error
        plain = timed.get("plain", {}).get("samples_per_s")
        report["step_variants"] += [{"arch": arch, "batch": cfg["batch"], "variant": name, **row,
                                     "vs_plain": row["samples_per_s"] / plain if plain else None}
                                    for name, row in timed.items()]
    # the peak again at the end, and the better of the two: background load at one end does not lower it
    peak = report["peak_tflops"] = {p: max(v, report["peak_tflops"][p]) for p, v in peaks(opts).items()}
    for row in report["train"]:  # MFU: the achieved rate over the peak measured in the same run
        if "samples_per_s" in row:
            row["tflops"] = row["samples_per_s"] * row["gflops"] / 1e3
            row["mfu"] = row["tflops"] / peak[row["precision"]] if peak.get(row["precision"]) else None
    report["eval"] = [{"arch": arch, "precision": precision, "batch": opts.eval_batch, **in_subprocess(
        {**base_cfg(opts, arch, "clip", precision, opts.eval_batch), "kind": "eval", "warmup": 1, "steps": 1}, opts)}
        for arch, precision in itertools.product(opts.archs, opts.precisions)]
    # tokenizer texts/s; decode + augment images/s per worker and the training loader's images/s, by layout
    # (a folder, tar shards indexed and streamed: measure.py), on fresh JPEGs
    report["tokenizer"] = measure.bench_tokenizer(opts.tokenizer_texts, max_other_load=opts.max_other_load)
    with tempfile.TemporaryDirectory() as folder:
        measure.write_jpegs(folder, opts.data_images)
        report["data"], report["loader"] = measure.bench_data(folder, opts.data_images, opts.workers,
                                                              max_other_load=opts.max_other_load)


def study_accum(opts, report):
    """Memory and speed of accumulation / checkpointing, and the largest batch within the budget:
    extrapolated from the peaks at B and B/2 plus the loss's measured B x B cost."""
    arch, precision, batch = opts.archs[0], opts.precisions[0], opts.batch_sizes[0]
    loss = in_subprocess(dict(kind="loss_memory", batch=opts.loss_probe_batch, embed_dim=512), opts)
    loss_mb_per_b2 = loss["peak_mb"] / opts.loss_probe_batch ** 2  # the B x B logits and their gradients
    a = report["accum"] = {"arch": arch, "precision": precision, "batch": batch, "image_size": opts.image_size,
                           "context_length": opts.context_length, "text_arch": opts.text_arch,
                           "budget_gb": opts.memory_budget_gb, "loss_mb_per_b2": loss_mb_per_b2, "rows": []}
    for name, k, ckpt in [("plain", 1, False), *((f"accum K={k}", k, False) for k in (2, 4, 8)),
                          ("grad-ckpt", 1, True), ("accum K=8 + grad-ckpt", 8, True)]:
        cfg = base_cfg(opts, arch, "clip", precision, batch, accum=k, grad_checkpointing=ckpt)
        full = train_row(cfg, opts)
        half = train_row(cfg, opts, batch=batch // 2, warmup=1, windows=1, steps=1).get("peak_mb")  # two steps
        row = {"variant": name, "accum": k, "grad_checkpointing": ckpt, **full, "peak_mb_half_batch": half}
        if "peak_mb" in full and half is not None:
            row["max_batch"] = max_batch_extrapolated(batch, full["peak_mb"], half, loss_mb_per_b2,
                                                      opts.memory_budget_gb * 1024, k)
        a["rows"].append(row)


def max_batch_extrapolated(batch, peak_full, peak_half, loss_per_b2, budget_mb, k):
    """Largest global batch (a multiple of K) with a + b*B + c*B^2 <= budget: a, b from the peaks
    measured at B and B/2 (after removing the loss's c*B^2), c measured on the loss alone."""
    half = batch // 2
    slope = ((peak_full - loss_per_b2 * batch ** 2) - (peak_half - loss_per_b2 * half ** 2)) / (batch - half)
    fixed = peak_full - loss_per_b2 * batch ** 2 - slope * batch
    if slope <= 0:
        return None
    b = (-slope + (slope ** 2 + 4 * loss_per_b2 * (budget_mb - fixed)) ** 0.5) / (2 * loss_per_b2) \
        if loss_per_b2 > 0 else (budget_mb - fixed) / slope
    return int(b // k * k)


# --- reporting ------------------------------------------------------------------------------------

def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def table(rows, columns):
    """A markdown table of row dicts; a column is (header, key[, digits]) or (header, function of a row)."""
    cell = lambda r, c: str(c[1](r)) if callable(c[1]) else fmt(r.get(c[1]), *c[2:])
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows])


TABLES = {  # report key: its columns
    "train": [("arch", lambda r: r["arch"] + " (compiled)" * bool(r.get("compile"))), ("strategy", "strategy"),
              ("precision", "precision"), ("batch", "batch"), ("samples/s", "samples_per_s", 2),
              ("peak MB", "peak_mb", 0), ("GFLOPs/sample", "gflops", 2), ("TFLOP/s", "tflops", 3),
              ("MFU", lambda r: f"{100 * r['mfu']:.1f}%" if r.get("mfu") else r.get("error", "-")),
              ("other load", "other_load", 2)],
    "step_variants": [("arch", "arch"), ("step", "variant"), ("precision", "precision"), ("batch", "batch"),
                      ("samples/s", "samples_per_s", 2), ("GFLOPs/sample", "gflops", 2),
                      ("vs plain", lambda r: f"{r['vs_plain']:.2f}x" if r.get("vs_plain") else r.get("error", "-"))],
    "eval": [("arch", "arch"), ("precision", "precision"), ("batch", "batch"), ("eval images/s", "images_per_s", 1)],
    "tokenizer": [("tokenizer", "tokenizer"), ("texts", "texts"), ("cold texts/s", "cold_texts_per_s", 0),
                  ("warm texts/s", "warm_texts_per_s", 0)],
    "data": [("source", "source"), ("size", "image_size"), ("preset", "preset"),
             ("images/s per worker", "images_per_s_per_worker", 0)],
}
ACCUM_COLUMNS = [("variant", "variant"), ("K", "accum"), ("grad ckpt", "grad_checkpointing"),
                 ("samples/s", "samples_per_s", 2), ("peak MB", "peak_mb", 0),
                 ("peak MB at B/2", "peak_mb_half_batch", 0),
                 ("max batch", lambda r: r.get("error") or fmt(r.get("max_batch")))]


def markdown(report):
    m, o = report["machine"], report["options"]
    out = [f"tinyclip bench, {m['date']}: {m['device']}, torch {m['torch']}, {m['threads']} threads; "
           f"{report.get('seconds', 0):.0f} s; load average at start {m['loadavg'][0]:.2f}; CPU share other "
           f"processes took during the run {fmt(m.get('other_load'), 2)} (timed windows above "
           f"{o['max_other_load']} are re-run)"]
    if "peak_tflops" in report:
        sizes = list(o["peak_sizes"]) + ([8192] if m["device"].startswith("cuda") else [])
        out.append(f"Dense matmul peak ({' and '.join(f'{n}^3' for n in sizes)} matmuls, best of 5 clean calls each): "
                   + ", ".join(f"{p} {v:.3f} TFLOP/s" for p, v in report["peak_tflops"].items()))
    out += [table(report[key], columns) for key, columns in TABLES.items() if report.get(key)]
    if "loader" in report:
        l = report["loader"]
        out.append(f"Training loader, {l['workers']} workers, JPEG, {l['image_size']} px, preset {l['preset']}, images/s: "
                   + ", ".join(f"{layout} {rate:.0f}" for layout, rate in l["images_per_s"].items()))
    if "accum" in report:
        a = report["accum"]
        out.append(f"Accumulation / checkpointing: {a['arch']} {a['precision']} {a['image_size']} px, text "
                   f"{a['text_arch'] or 'default'} x {a['context_length']} tokens, global batch {a['batch']}; "
                   f"max batch within {a['budget_gb']} GB, extrapolated from the peaks at B and B/2\n\n"
                   + table(a["rows"], ACCUM_COLUMNS))
    return "\n\n".join(out) + "\n"


# --- command line ---------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda cast: (lambda s: [cast(v) for v in s.split(",") if v])
    p.add_argument("--study", default="sweep", choices=("sweep", "accum"), help="what to measure")
    p.add_argument("--quick", action="store_true", help="a small sweep that finishes in minutes on 2 CPU cores")
    p.add_argument("--archs", type=csv(str), default=["vit-s-16", "vit-b-32"], help="comma-separated presets")
    p.add_argument("--strategies", type=csv(str), default=["clip", "flip"], help="clip, flip, slip, clip-aug")
    p.add_argument("--precisions", type=csv(str), help="fp32, bf16, fp16 (autocast); default fp32,bf16, or fp32 where "
                                                       "bf16 is emulated (a CPU without AVX512-BF16 or AMX)")
    p.add_argument("--batch-sizes", type=csv(int), default=[32], help="global batch sizes")
    p.add_argument("--image-size", type=int, default=224, help="input resolution")
    p.add_argument("--context-length", type=int, default=77, help="text tokens (the paper uses 16)")
    p.add_argument("--text-arch", help="text tower preset (default: the arch's pairing)")
    p.add_argument("--accum-steps", type=int, default=1, help="sweep: gradient-cache micro-batches")
    p.add_argument("--grad-checkpointing", action="store_true", help="sweep: recompute activations")
    p.add_argument("--compile", action="store_true", help="sweep: compile the model (as train.py --compile)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--windows", type=int, default=3, help="timed windows; the median is reported")
    p.add_argument("--steps-per-window", type=int, default=2, help="training steps per timed window")
    p.add_argument("--eval-batch", type=int, default=64, help="batch for eval images/s")
    p.add_argument("--tokenizer-texts", type=int, default=5000, help="captions to tokenize")
    p.add_argument("--data-images", type=int, default=64, help="images per augmentation preset")
    p.add_argument("--workers", type=int, default=2, help="loader workers (train.py's default: 2)")
    p.add_argument("--memory-budget-gb", type=float, default=16.0, help="accum: memory budget for the max batch")
    p.add_argument("--loss-probe-batch", type=int, default=8192, help="accum: batch for the loss-memory probe")
    p.add_argument("--max-other-load", type=float, default=0.1,
                   help="re-run a timed window if other processes used more than this fraction of the CPUs")
    p.add_argument("--max-wait", type=float, default=900.0, help="seconds a process may wait for others' load to pass")
    p.add_argument("--peak-sizes", type=csv(int), default=list(measure.PEAK_SIZES),
                   help="n of the n^3 matmuls that measure the peak (8192 is added on a GPU)")
    p.add_argument("--default-malloc", action="store_true",
                   help="CPU: skip train.keep_freed_memory() (glibc's defaults page-fault activations in every step)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--markdown", help="write the markdown tables here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.precisions is None:
        opts.precisions = ["fp32", "bf16"] if measure.native_bf16(device_now()) else ["fp32"]
    if opts.quick:
        opts.archs, opts.strategies, opts.batch_sizes = ["vit-ti-16"], ["clip", "flip"], [16]
        opts.warmup, opts.windows, opts.steps_per_window = 1, 3, 1
        opts.eval_batch, opts.tokenizer_texts, opts.data_images = 16, 2000, 16
    return opts


def main(argv=None):
    opts = parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    measure.QUIET_WAIT_S["left"] = opts.max_wait
    device = device_now()
    if device.type == "cpu" and not opts.default_malloc:
        train.keep_freed_memory()  # as train.py's main() does
    if opts.worker:
        cfg = json.loads(opts.worker)
        return print(json.dumps(WORKERS[cfg["kind"]](cfg)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else measure.cpu_name()
    report = {"machine": {"date": datetime.date.today().isoformat(), "device": f"{device.type}: {name}, "
                          f"{os.cpu_count()} CPUs", "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "loadavg": os.getloadavg()},
              "options": {k: v for k, v in vars(opts).items() if k != "worker"}}
    start, meter = time.perf_counter(), LoadMeter()
    {"sweep": study_sweep, "accum": study_accum}[opts.study](opts, report)
    report["seconds"], report["machine"]["other_load"] = round(time.perf_counter() - start, 1), meter.others()
    print(text := markdown(report))
    for path, content in ((opts.markdown, text), (opts.json, json.dumps(report, indent=1, default=str))):
        if path:
            Path(path).write_text(content)
    return report


if __name__ == "__main__":
    main()
