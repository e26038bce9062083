"""The four studies of "Scaling (Down) CLIP" (Li, Xie, Cubuk; arXiv 2404.08197, TMLR 2024), end to end:
data quantity, data quality, architecture and training strategy, and a fifth beyond the paper (SigLIP's
sigmoid loss, CLIPA's reduced tokens, LiT's locked image tower) and a sixth that tests the explanations of
disagreements (scripts/hypotheses.py), each a grid of train.py runs at fixed samples-seen budgets with one
text tower for every run, evaluated with eval.py (zero-shot top-1, linear probe top-1, retrieval R@1,
robustness), then tabulated, plotted and checked against the paper's findings (scripts/findings.py) in a
markdown summary (scripts/report.py).

    python scripts/reproduce.py --quick                  # CPU, 2 cores, < 20 min: micro towers, built-in data
    python scripts/reproduce.py --standard               # the same grid and more, 3 seeds (CPU, longer)
    python scripts/reproduce.py --preset full --jobs 8   # the same studies on a bigger grid, 3 seeds (GPU)
    python scripts/reproduce.py --smoke                  # two tiny runs of the quantity study (the tests)
    python scripts/reproduce.py --data 'shards/{00000..34999}.tar' --eval-data imagenet/val \\
        --retrieval-data coco/dataset_coco.json --probe-train imagenet/train --probe-test imagenet/val \\
        --scores scores.csv --gpus 8 --dry-run           # real scale: print the torchrun/eval.py commands

Both modes build the same train.py/eval.py argument lists. On the built-in data (micro) every run executes
in-process (train.main, eval.main) in a pool of --jobs single-threaded processes; on real data, where the
paper's settings (PAPER) are the defaults, as `torchrun train.py ...` then `python eval.py ...` (a path for
GPUs, exercised here only by --dry-run). Settings are fixed before anything runs, never tuned to make a
result agree. --out gets runs.csv, runs.json, summary.md, <study>.png and runs/<id>/ (console log, train
log, eval JSON; the checkpoint only with --keep-checkpoints or on real data); a run whose result.json
exists is not run again, so an interrupted reproduction resumes and a rerun only redraws the outputs.
"""
import argparse
import concurrent.futures as futures
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import torch  # noqa: E402

import eval as evaluate  # noqa: E402
import report  # noqa: E402
import train  # noqa: E402
from report import STUDIES  # noqa: E402
from hypotheses import hypothesis_runs  # noqa: E402
from settings import MICRO, PAPER, PRESETS, SMOKE, Grid, Run, Scale, quality_pool_spec  # noqa: E402
from tinyclip import train_flags  # noqa: E402
from tinyclip.sources import open_source  # noqa: E402

# --- the plan: one Run per (study, setting, seed) ----------------------------------------------------------

def plan(grid: Grid, scale: Scale, data: str, studies, pool_size=None, lit_init=None, strong_scores=None):
    """Every Run of the chosen studies; a training shared by two studies appears in both. lit_init: the
    checkpoint of LiT's image tower (None: the LiT runs are left out); strong_scores: the stronger scorer's file
    (None: its hypothesis is left out)."""
    runs = []
    for seed in grid.seeds:
        add = lambda study, setting, regime, *rest, **kw: runs.append(Run(study, setting, regime, seed, *rest, **kw))
        if "quantity" in studies:
            for size in grid.quantity_sizes:
                for epochs in grid.quantity_epochs + (grid.long_epochs if size == grid.quantity_sizes[0] else ()):
                    add("quantity", f"{size} pairs", "fixed-epochs", scale.base_arch, "clip", data, size,
                        size * epochs, epochs=epochs, robust=True)
        if "quality" in studies and pool_size:
            for fraction in grid.quality_fractions:
                kept = round(fraction * pool_size)
                one_epoch = grid.quality_one_epoch is None or fraction in grid.quality_one_epoch
                for regime, samples in (("one-epoch", kept),) * one_epoch + (("equal-samples", grid.quality_samples),):
                    add("quality", f"top {round(100 * fraction)}%", regime, scale.base_arch, "clip",
                        quality_pool_spec(grid, data), None, samples, keep_top=fraction, epochs=samples / kept)
        if "architecture" in studies:
            for arch in grid.arch_list:
                for size in grid.arch_sizes:
                    add("architecture", arch, "fixed-epochs", arch, "clip", data, size, size * grid.arch_epochs,
                        epochs=grid.arch_epochs, robust=True)
        if "strategy" in studies:
            cells = [("one-epoch", s, 1, grid.strategy_single_list) for s in grid.strategy_single_sizes]
            cells += [("multi-epoch", s, grid.strategy_multi_epochs, grid.strategy_multi_list)
                      for s in grid.strategy_multi_sizes]
            for regime, size, epochs, strategies in cells:
                for strategy in strategies:
                    add("strategy", strategy, regime, scale.base_arch, strategy, data, size, size * epochs,
                        epochs=epochs)
        if "beyond" in studies:
            runs += beyond_runs(grid, scale, data, seed, lit_init)
        if "hypotheses" in studies and grid.hypotheses:
            runs += hypothesis_runs(grid, scale, data, seed, pool_size, strong_scores)
    return runs


def beyond_runs(grid: Grid, scale: Scale, data: str, seed: int, lit_init) -> list:
    """The study beyond the paper, one regime per comparison ("<part>: <what is equal>, <the budget>", so that
    each budget is a cell of its own): SigLIP's loss at each batch size and equal samples; CLIPA's reduced
    tokens + full-size tuning against full size at equal training FLOPs (the main stage's samples fill what the
    tuning stage leaves); LiT's locked image tower against both towers from scratch at equal samples and at
    equal FLOPs (pretraining not counted, as LiT)."""
    size, runs = grid.beyond_size, []
    run = lambda setting, regime, samples, **kw: Run("beyond", setting, regime, seed, scale.base_arch, "clip", data,
                                                     size, samples, epochs=samples / size, **kw)
    for batch in grid.loss_batches:
        runs += [run(loss, f"loss: batch {batch}", grid.beyond_samples[-1], batch=batch, loss=loss)
                 for loss in ("softmax", "sigmoid")]
    whole = lambda samples: max(1, round(samples / scale.batch_size)) * scale.batch_size
    for samples in grid.beyond_samples:
        tokens = f"tokens: equal FLOPs to {samples:,} full-size samples"
        full = run("full size", tokens, samples)
        budget = cost(full, scale)["total_compute_gflops"]
        tune_steps = max(1, round(grid.tune_fraction * samples / scale.batch_size))
        g = stage_gflops(run("", "", scale.batch_size, reduced=grid.reduced, tune_steps=tune_steps), scale)
        main = whole((budget - tune_steps * scale.batch_size * g["tune"]) / g["main"])
        runs += [full, run("reduced + tuning", tokens, main, reduced=grid.reduced, tune_steps=tune_steps)]
        if lit_init:
            locked = stage_gflops(run("", "", scale.batch_size, init=str(lit_init)), scale)["main"]
            for regime, locked_samples in ((f"equal samples, {samples:,}", samples),
                                           (f"equal FLOPs to {samples:,} samples from scratch", whole(budget / locked))):
                runs += [run("from scratch", f"lit: {regime}", samples),
                         run("locked image", f"lit: {regime}", locked_samples, init=str(lit_init))]
    return runs


# --- train.py and eval.py arguments ------------------------------------------------------------------------

def batch_size(scale: Scale, run: Run) -> int:
    # FLIP: mask half the patches, double the batch
    return run.batch or scale.batch_size * (2 if run.strategy == "flip" else 1)


def train_argv(run: Run, scale: Scale, scores: Path = None) -> list:
    """train.py's arguments for a run, without --out: the caller adds a folder named by train_id(argv)."""
    strategy, _, augment = run.strategy.partition(":")
    image_size, context_length = run.reduced or (run.image_size or scale.image_size, scale.context_length)
    argv = ["--strategy", strategy, "--arch", run.arch, "--text-arch", scale.text_arch,
            "--image-size", image_size, "--context-length", context_length, "--data", run.data,
            "--samples-seen", run.samples_seen, "--batch-size", batch_size(scale, run), "--lr", scale.lr,
            "--optimizer", scale.optimizer, "--normalize", scale.normalize, "--precision", scale.precision,
            "--seed", run.seed, "--workers", scale.workers, "--eval-data", "none", "--save-every", scale.save_every]
    for flag, value in (("--embed-dim", scale.embed_dim), ("--wd", scale.wd), ("--warmup", scale.warmup),
                        ("--dataset-size", run.dataset_size), ("--augment", augment or None)):
        if value is not None:
            argv += [flag, value]
    if run.keep_top is not None:
        argv += ["--keep-top", run.keep_top, "--scores", run.scores or scores]
    slip_head = run.slip_head or scale.slip_head
    if strategy == "slip" and slip_head:
        argv += ["--ssl-mlp-dim", slip_head[0], "--ssl-emb-dim", slip_head[1]]
    if run.loss != "softmax":
        argv += ["--loss", run.loss]
    if run.reduced:  # CLIPA: lr / 10 for the tuning stage, as train.py's lr / 100 (FLIP's, for 0.4% of a run at
        # batch 16k) would move a micro model's weights by ~1e-4 in its few steps: no tuning at all
        argv += ["--tune-steps", run.tune_steps, "--tune-image-size", scale.image_size, "--tune-context-length",
                 scale.context_length, "--tune-lr", scale.lr / 10]
    if run.init:
        argv += ["--init", run.init, "--init-towers", "image", "--lock-image"]
    return [str(a) for a in argv]


def train_id(argv: list) -> str:
    """A readable, unique folder name for a training: the same arguments always give the same id."""
    get = lambda flag: argv[argv.index(flag) + 1] if flag in argv else ""
    digest = hashlib.sha1("\0".join(argv).encode()).hexdigest()[:8]
    parts = [get("--arch"), get("--strategy"), get("--augment"), f"n{get('--dataset-size') or 'all'}",
             f"k{get('--keep-top')}" if "--keep-top" in argv else "", f"ss{get('--samples-seen')}", f"s{get('--seed')}"]
    return "-".join(p for p in parts if p) + "-" + digest


def eval_argvs(run_dir: Path, scale: Scale, args, run: Run = None) -> list:
    """eval.py's argument lists for the checkpoint in run_dir: zero-shot, retrieval and linear probe on the
    synthetic held-out split in one call, or one call per real set given (each optional); for a robust run, zero-shot
    on the robustness sets too (eval-robust.json: its "average" is the robustness number)."""
    common = ["--checkpoint", str(run_dir / "ckpt.pt"), "--precision", scale.precision]
    json_for = lambda task: ["--json", str(run_dir / f"eval-{task}.json")]
    robust = run is not None and run.robust
    if args.data == "synthetic":
        label_set = ["--label-set", (run and run.label_set) or scale.label_set]
        styles = [f"synthetic:style={style}" for style in scale.robust_styles]
        return [common + ["--task", "zeroshot", "retrieval", "linear-probe", "--data", "synthetic", *label_set,
                          "--size", str(scale.eval_size), "--train-size", str(scale.probe_train)] + json_for("all")] + [
            common + ["--task", "zeroshot", "--data", *styles, *label_set, "--size", str(scale.robust_size)]
            + json_for("robust")] * robust
    root = ["--image-root", args.image_root] if args.image_root else []
    subsets = ["--class-subset", *args.robust_class_subset] if args.robust_class_subset else []
    tasks = [(args.eval_data, "zeroshot", ["--data", args.eval_data, "--classnames", args.classnames]),
             (args.retrieval_data, "retrieval", ["--data", args.retrieval_data] + root),
             (args.probe_train and args.probe_test, "linear-probe", ["--train-data", args.probe_train, "--test-data",
                                                                     args.probe_test]),
             (robust and args.robust_data, "robust", ["--data", *(args.robust_data or []), "--classnames",
                                                      args.classnames, *subsets])]
    return [common + ["--task", task.replace("robust", "zeroshot")] + extra + json_for(task)
            for given, task, extra in tasks if given]


def stage_gflops(run: Run, scale: Scale) -> dict:
    """Training GFLOPs per sample of each stage of the model train.py builds for such a run, {"main", "tune"}
    (train.stage_gflops: SLIP's projector included, every clip-aug variant counts as clip, a locked tower
    its forward only), counted on the meta device."""
    like = dataclasses.replace(run, seed=0, data="synthetic", dataset_size=None, samples_seen=batch_size(scale, run),
                               keep_top=None, init=None)
    return _stage_gflops(tuple(train_argv(like, scale)), run.init is not None)


@functools.lru_cache(maxsize=None)
def _stage_gflops(argv: tuple, locked: bool) -> dict:
    args = train_flags.parse_args(list(argv))
    args.lock_image = locked  # without its --init, whose file may not be trained yet: the towers are the flags'
    return train.stage_gflops(args)


def cost(run: Run, scale: Scale) -> dict:
    """What a run trains, as runs.csv states it: its batch, the samples train.py runs (whole steps, the
    tuning stage included), their mean GFLOPs per sample and the total."""
    batch, g = batch_size(scale, run), stage_gflops(run, scale)
    main, tune = max(1, run.samples_seen // batch) * batch, run.tune_steps * batch
    total = main * g["main"] + tune * g["tune"]
    return {"batch_size": batch, "samples_seen": main + tune, "gflops_per_sample": total / (main + tune),
            "total_compute_gflops": total}


# --- running: one job = train.py once, then eval.py's calls, its numbers kept as result.json ---------------

def execute(job: dict) -> dict:
    """Train, then evaluate; returns (and stores as result.json) the run's metrics. In-process (micro):
    train.main and eval.main with the console output in console.log; else `torchrun train.py`, `python eval.py`."""
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    start, cpu_start, result = time.perf_counter(), time.process_time(), {"run_id": run_dir.name}
    steps = [(train.main, job["launcher"] + ["train.py"], job["train"])] if job["train"] else []
    steps += [(evaluate.main, [sys.executable, "eval.py"], argv) for argv in job["evals"]]
    try:
        with open(run_dir / "console.log", "a") as log, redirect_stdout(log), redirect_stderr(log):
            for main_fn, command, argv in steps:
                if job["launcher"]:
                    subprocess.run(command + argv, cwd=ROOT, stdout=log, stderr=log, check=True)
                else:
                    main_fn(argv)
                if main_fn is train.main:
                    result["train_s"] = round(time.perf_counter() - start, 2)
    except (Exception, SystemExit) as error:  # one failed run is reported, not fatal to the others
        return {**result, "error": f"{type(error).__name__}: {error} (see {run_dir / 'console.log'})"}
    merged, robust = {}, {}
    for path in sorted(run_dir.glob("eval-*.json")):
        (robust if path.name == "eval-robust.json" else merged).update(json.loads(path.read_text()))
    first = lambda task: next(iter(merged.get(task, {}).values()), {})
    i2t, t2i = first("retrieval").get("image_to_text_R@1"), first("retrieval").get("text_to_image_R@1")
    sets = robust.get("zeroshot", {})  # one set: no "average"
    robustness = sets["average"]["top1"] if "average" in sets else next(iter(sets.values()), {}).get("top1")
    # CPU time of this process (in-process jobs): the wall time the run would take on an idle core
    result.update(zeroshot=first("zeroshot").get("top1"), probe=first("linear-probe").get("top1"),
                  retrieval=None if i2t is None or t2i is None else (i2t + t2i) / 2, i2t=i2t, t2i=t2i,
                  robustness=robustness, robust_sets={k: v["top1"] for k, v in sets.items() if k != "average"},
                  wall_s=round(time.perf_counter() - start, 2), cpu_s=round(time.process_time() - cpu_start, 2))
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    if job["drop_checkpoint"]:  # the numbers are kept; a micro checkpoint is ~20 MB, mostly token embeddings
        (run_dir / "ckpt.pt").unlink(missing_ok=True)
    return result


def run_jobs(jobs: dict, parallel: int, threads: int, start: float) -> dict:
    """{id: result} of every job, in a pool of `parallel` processes of `threads` torch threads: those not done
    yet run longest first, and a job waits for the one it comes "after" when that has to run (the quality runs
    for the scorer, the LiT runs for their image tower)."""
    results = {k: json.loads(p.read_text()) for k, j in jobs.items()
               if (p := Path(j["run_dir"]) / "result.json").exists()}
    todo = sorted((k for k in jobs if k not in results), key=lambda k: -jobs[k]["cost"])
    held = [k for k in todo if jobs[k]["after"] in todo]
    with futures.ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        running = {pool.submit(execute, jobs[k]): k for k in todo if k not in held}
        while running:
            for future in futures.wait(running, return_when=futures.FIRST_COMPLETED)[0]:
                key = running.pop(future)
                result = results[key] = future.result()
                metrics = " ".join(f"{m}={result[m]:.3f}" for m in ("zeroshot", "probe", "retrieval")
                                   if result.get(m) is not None)
                done, minutes = len(results) - len(jobs) + len(todo), (time.perf_counter() - start) / 60
                print(f"[{done}/{len(todo)} {minutes:5.1f} min] {result['run_id']} {result.get('error') or metrics} "
                      f"({result.get('wall_s', 0):.0f} s)", flush=True)
                running.update({pool.submit(execute, jobs[k]): k for k in held if jobs[k]["after"] == key})
    return results


# --- main ------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to run")
    g.add_argument("--preset", choices=PRESETS, help="grid: smoke (2 tiny runs), quick (CPU, < 20 min), full (GPU), "
                                                      "paper (real data; the default there)")
    g.add_argument("--quick", dest="preset", action="store_const", const="quick", help="same as --preset quick")
    g.add_argument("--standard", dest="preset", action="store_const", const="standard",
                   help="same as --preset standard (quick's grid, 3 seeds)")
    g.add_argument("--smoke", dest="preset", action="store_const", const="smoke", help="same as --preset smoke")
    g.add_argument("--studies", nargs="+", choices=STUDIES, help="studies to run (default: all; smoke: quantity)")
    g.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    g.add_argument("--out", help="output folder (default runs/reproduce-<preset>)")
    g.add_argument("--dry-run", action="store_true", help="print the train.py / eval.py commands and stop")
    g = p.add_argument_group("running")
    g.add_argument("--jobs", type=int, help="runs at once (default: 2 on synthetic data, smoke 1; real 1)")
    g.add_argument("--threads", type=int, default=1, help="torch threads per run (synthetic data)")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every run's ckpt.pt once evaluated (real data: always)")
    g.add_argument("--gpus", type=int, default=1, help="real data: torchrun --nproc_per_node")
    g = p.add_argument_group("real data (the paper's settings are the defaults)")
    g.add_argument("--data", default="synthetic", help="training pairs: synthetic, CSV/TSV, tar shards (as train.py)")
    g.add_argument("--eval-data", help="zero-shot ImageFolder (e.g. ImageNet val)")
    g.add_argument("--classnames", default="imagenet", help="zero-shot class names (eval.py --classnames)")
    g.add_argument("--retrieval-data", help="retrieval pairs: COCO-style captions JSON or any pairs source")
    g.add_argument("--image-root", help="images of --retrieval-data (eval.py --image-root)")
    g.add_argument("--probe-train", help="linear probe training ImageFolder")
    g.add_argument("--probe-test", help="linear probe test ImageFolder")
    g.add_argument("--robust-data", nargs="+", help="robustness ImageFolders (ImageNet-V2, -R, -A, -Sketch, ...): "
                                                    "zero-shot, their mean top-1 is the robustness number")
    g.add_argument("--robust-class-subset", nargs="+", help="eval.py --class-subset per --robust-data folder "
                                                            "(imagenet-a, imagenet-r, none)")
    g.add_argument("--scores", help="quality study: key,score file for --data (eval.py --task score)")
    g.add_argument("--scorer", help="quality study: OpenAI/open_clip weights to write --scores with")
    g.add_argument("--lit-init", help="beyond study: the checkpoint whose image tower LiT locks (trained on other "
                                      "data than --data; synthetic data: trained here)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    synthetic = args.data == "synthetic"
    preset = args.preset or ("quick" if synthetic else "paper")
    grid = dataclasses.replace(PRESETS[preset], **({"seeds": tuple(args.seeds)} if args.seeds else {}))
    scale = (SMOKE if preset == "smoke" else MICRO) if synthetic else PAPER
    studies = args.studies or (("quantity",) if preset == "smoke" else STUDIES)
    out = Path(args.out or ROOT / "runs" / f"reproduce-{preset}")
    parallel = args.jobs or (1 if preset == "smoke" or not synthetic else min(2, os.cpu_count() or 1))
    job = lambda run_dir, train_args, evals, **kw: {  # what execute needs, and how run_jobs orders it
        "run_dir": str(run_dir), "train": train_args, "evals": evals, "drop_checkpoint": False, "after": None,
        "cost": float("inf"), "launcher": [] if synthetic else ["torchrun", f"--nproc_per_node={args.gpus}"], **kw}
    jobs, scores, pool_size, notes = {}, None, None, list(report.NOT_COVERED)

    def training(prefix, argv_t):
        """A training's folder (named by its arguments, so the same training is run once) and its full argv."""
        run_dir = out / "runs" / (prefix + train_id(argv_t))
        return run_dir, argv_t + ["--out", str(run_dir), "--resume", "auto"]
    # a CLIP of the base tower on data of its own: the quality study's scorer, the tower LiT locks
    base_clip = lambda data, samples: train_argv(Run("", "", "", 0, scale.base_arch, "clip", data, None, samples), scale)

    def scorer(key, samples):
        """A job training the base tower's CLIP on the scorer's data, then scoring the quality pool: its scores."""
        scorer_dir, argv_s = training(f"{key}-", base_clip(grid.scorer_data, samples))
        jobs[key] = job(scorer_dir, argv_s, [["--checkpoint", str(scorer_dir / "ckpt.pt"), "--task", "score",
                                              "--data", quality_pool_spec(grid, args.data), "--out",
                                              str(scorer_dir / "scores.csv")]])
        return scorer_dir / "scores.csv"

    # the scorer of the quality study: trained here on synthetic data, given (--scores/--scorer) on real data
    strong_scores = None
    if "quality" in studies and synthetic:
        pool_size, scores = grid.quality_pool, scorer("scorer", grid.scorer_samples)
        if "hypotheses" in studies and grid.hypotheses:  # H5's
            strong_scores = scorer("scorer-strong", 4 * grid.scorer_samples)
    elif "quality" in studies and (args.scores or args.scorer):
        try:
            pool_size = len(open_source(args.data))
        except (FileNotFoundError, ValueError) as error:
            sys.exit(f"reproduce.py: error: --data: {error}")
        scores = Path(args.scores or out / "scores.csv")
        if not args.scores:
            score = ["--openai", args.scorer, "--task", "score", "--data", args.data, "--out", str(scores)]
            jobs["scorer"] = job(out / "runs" / "scorer", None, [score + ["--precision", scale.precision]])
    elif "quality" in studies:
        notes.append("The quality study: give --scores (or --scorer weights) to rank the real pairs.")
    # LiT's image tower: a CLIP trained here on a disjoint split of the built-in data, or given
    lit_init = Path(args.lit_init) if args.lit_init else None
    if "beyond" in studies and synthetic and not lit_init:
        init_dir, argv_l = training("lit-init-", base_clip(grid.lit_init_data, grid.lit_init_samples))
        lit_init = init_dir / "ckpt.pt"
        jobs["lit-init"] = job(init_dir, argv_l, eval_argvs(init_dir, scale, args))
    elif "beyond" in studies and not lit_init:
        notes.append("The beyond study's LiT runs: give --lit-init, a checkpoint trained on other data.")

    try:  # every model builds before any run starts
        runs = plan(grid, scale, args.data, studies, pool_size, lit_init, strong_scores)
        costs = [cost(r, scale) for r in runs]
    except train_flags.ConfigError as error:
        sys.exit(f"reproduce.py: error: --preset {preset} on --data {args.data}: {error}")
    trainings = [training("", train_argv(run, scale, scores)) for run in runs]
    ids = [run_dir.name for run_dir, _ in trainings]
    robust = {run_id for run_id, run in zip(ids, runs) if run.robust}  # a training shared with a robust run is one
    for run, (run_dir, argv_t), run_cost in zip(runs, trainings, costs):
        evals = eval_argvs(run_dir, scale, args, dataclasses.replace(run, robust=run_dir.name in robust))
        after = "lit-init" if run.init else None  # a LiT run waits for the tower it locks, a quality run for its scorer
        if run.keep_top is not None:
            after = "scorer-strong" if run.scores else "scorer"
        jobs.setdefault(run_dir.name, job(run_dir, argv_t, evals, after=after, cost=run_cost["total_compute_gflops"],
                                          drop_checkpoint=synthetic and not args.keep_checkpoints))
    trained = sum(int(j["train"][j["train"].index("--samples-seen") + 1]) for k, j in jobs.items()
                  if k not in ("scorer", "scorer-strong", "lit-init"))
    print(f"{preset}: studies {', '.join(studies)}; {len(runs)} rows, {len(jobs)} trainings, {trained:,} samples to "
          f"train ({sum(r.samples_seen for r in runs):,} counted per row); {parallel} at once -> {out}")
    if args.dry_run:
        quote = lambda arg: f"'{arg}'" if any(c in arg for c in " {}*;,") else arg
        for j in jobs.values():
            if j["train"]:
                print(" ".join(j["launcher"] or ["python"]) + " train.py " + " ".join(map(quote, j["train"])))
            for argv_e in j["evals"]:
                print("python eval.py " + " ".join(map(quote, argv_e)))
        return None

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ran = any(not (Path(j["run_dir"]) / "result.json").exists() for j in jobs.values())
    results = run_jobs(jobs, parallel, args.threads, start)
    # the wall time of every invocation that trained something, so that outputs redrawn from stored results
    # (nothing left to run) still say how long the runs took
    timing_file, wall = out / "timing.json", time.perf_counter() - start
    if timing_file.exists():
        wall = json.loads(timing_file.read_text())["wall_s"] + (wall if ran else 0.0)
    timing_file.write_text(json.dumps({"wall_s": round(wall, 1)}))
    results.pop("scorer", None), results.pop("scorer-strong", None)
    failed = [r for r in results.values() if "error" in r]
    busy, cpu = (sum(r.get(k) or 0 for r in results.values()) for k in ("wall_s", "cpu_s"))
    timing = (f"{len(results)} trainings ({len(failed)} failed), plus the scorer where the quality study ran, took "
              f"{wall / 60:.1f} min of wall time: {busy / 60:.1f} min of run time over {parallel} parallel jobs of "
              f"{args.threads} torch thread(s), {cpu / 60:.1f} min of CPU time ({os.cpu_count()} CPUs, torch "
              f"{torch.__version__}; other work on the machine stretches wall time, not CPU time).")
    print(timing)
    command = "python scripts/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return report.write_outputs(out, runs, ids, results, costs, grid=grid, scale=scale, studies=studies,
                                scores={"the scorer": scores, "the stronger scorer (H5)": strong_scores},
                                command=f"`{command}` (preset `{preset}`). {timing}",
                                notes=notes + [f"Failed run {r['run_id']}: {r['error']}" for r in failed])


if __name__ == "__main__":
    main()
