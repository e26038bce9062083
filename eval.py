"""Evaluate a CLIP checkpoint the way "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024) does: zero-shot
classification (and its robustness average), image-text retrieval, linear probe, few-shot, and the
image-text scores its data-quality study filters by. The tasks themselves are tinyclip/evaluation.py
(zeroshot, retrieval, score) and tinyclip/probe.py (linear-probe, fewshot).

    python eval.py --checkpoint runs/latest/ckpt.pt --task zeroshot retrieval --data synthetic
    python eval.py --checkpoint ckpt.pt --task linear-probe fewshot --data synthetic --fewshot-k 5 10
    python eval.py --checkpoint ckpt.pt --task score --data synthetic:noise=0.3,size=5000 --out scores.csv
        (then: python train.py --data synthetic:noise=0.3,size=5000 --keep-top 0.4 --scores scores.csv)
    python eval.py --openai ViT-B-32.pt --task zeroshot --data /data/imagenet/val --classnames imagenet
    python eval.py --openai ViT-B-32.pt --task zeroshot --classnames imagenet \\
        --data /data/imagenetv2 /data/imagenet-a /data/imagenet-r /data/objectnet \\
        --class-subset none imagenet-a imagenet-r objectnet_to_imagenet.json     (one robustness table)
    python eval.py --openai ViT-B-32.pt --task retrieval --data coco/dataset_coco.json --image-root coco/

Prints one aligned table per task and writes every number to --json (after each task, so a failing
task keeps the finished ones); `--metric-names clip_benchmark` names them as CLIP_benchmark does.
Each result carries its "provenance" (the data and image count, templates, class names, resize and
crop, precision, checkpoint, tinyclip version and commit), printed as a `# ...` line under its table.
Errors are one line, `eval.py: error: ...`, with exit status 2.
"""
import argparse
import functools
import json
import os
import subprocess
import sys
import warnings

import torch

import tinyclip
from tinyclip import evaluation, probe
from tinyclip.checkpoint import atomic_write, load_checkpoint
from tinyclip.model import load_openai
from tinyclip.sources import synthetic_style

TASKS = ("zeroshot", "retrieval", "linear-probe", "fewshot", "score")
# the metric that counts the images behind a task's result, its provenance's "images"
IMAGE_COUNT = {"zeroshot": "n", "retrieval": "images", "linear-probe": "test", "fewshot": "test", "score": "scored"}
# --metric-names clip_benchmark: LAION's CLIP_benchmark's names; its zeroshot_retrieval.py calls text->image
# "image_retrieval" (images are retrieved) and image->text "text_retrieval"
CLIP_BENCHMARK_NAMES = {"zeroshot": {"top1": "acc1", "top5": "acc5"},
                        "retrieval": {f"{ours}_R@{k}": f"{theirs}_recall@{k}" for k in (1, 5, 10) for ours, theirs in
                                      (("text_to_image", "image_retrieval"), ("image_to_text", "text_retrieval"))}}
# what torch.load's long messages (~700 characters of weights_only advice) come down to, by a phrase in them
LOAD_FAILURES = {"GLOBAL": "it holds pickled code, which safe loading refuses to run",
                 "zip archive": "truncated or corrupt: copy it again",
                 "Errno 22": "truncated or corrupt: copy it again",  # a zip cut short near its start
                 "TorchScript": "a TorchScript archive", "Unpickling": "not a torch file",
                 "EOFError": "empty or not a torch file", "no 'model' and 'config'": "no 'model' and 'config' entries",
                 "not an OpenAI CLIP state_dict": "no OpenAI CLIP weight names"}


# ---------------------------------------------------------------------------------------------
# Command line

def build_parser():
    summary, epilog = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="eval.py", description=summary, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model (one of)")
    which = g.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a tinyclip checkpoint (train.py's ckpt.pt or a step file)")
    which.add_argument("--openai",
                       help="OpenAI CLIP weights (TorchScript .pt or state_dict) or an open_clip state_dict")

    g = p.add_argument_group("what to run")
    g.add_argument("--task", nargs="+", default=["zeroshot"], help=f"one or more of: {', '.join(TASKS)}")
    g.add_argument("--data", nargs="+", default=None,
                   help="datasets (default: synthetic): 'synthetic' (built in), ImageFolder dirs (classification), "
                        "CSV/TSV, tar shards or a COCO-style captions .json (retrieval, score); zeroshot over several "
                        "gives their average")
    g.add_argument("--train-data", help="linear-probe/fewshot: training ImageFolder (default: synthetic train split "
                                        "when --data is synthetic)")
    g.add_argument("--test-data", help="linear-probe/fewshot: test ImageFolder (default: the single --data)")
    g.add_argument("--out", help="score: the key,score CSV to write (train.py --scores)")
    g.add_argument("--json", help="write all results to this JSON file (rewritten after each task)")
    g.add_argument("--metric-names", default="tinyclip", choices=("tinyclip", "clip_benchmark"),
                   help="clip_benchmark: CLIP_benchmark's names (acc1, acc5, image_retrieval_recall@K for "
                        "text->image, text_retrieval_recall@K for image->text)")

    g = p.add_argument_group("zero-shot")
    g.add_argument("--classnames", help="'imagenet' (the 1000 shipped names), a file (one per line in folder order, "
                                        "or folder<TAB>name), default: the folder names")
    g.add_argument("--templates", help="'imagenet' (CLIP's 80), 'generic' (6 plain ones) or a file "
                                       "(default: CLIP's 80 on folders, the label set's on synthetic)")
    g.add_argument("--class-subset", nargs="+",
                   help="per --data entry (or one for all): 'none', 'imagenet-a', 'imagenet-r', a .txt of class "
                        "indices, or an ObjectNet-style .json {folder: [class indices]}")

    g = p.add_argument_group("synthetic data")
    g.add_argument("--label-set", default="shape-color", help="synthetic classes: shape, color or shape-color")
    g.add_argument("--size", type=int, default=1000, help="images of the synthetic val split to evaluate on")
    g.add_argument("--train-size", type=int, default=2000, help="images of the synthetic train split for probes")

    g = p.add_argument_group("probes")
    g.add_argument("--fewshot-k", type=int, nargs="+", default=[5, 10], help="examples per class for fewshot")
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fewshot sampling seeds (mean, std)")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="fix the probe's L2 weight decay (default: chosen on a held-out 20%% of the training set)")

    g = p.add_argument_group("pairs (retrieval, score)")
    g.add_argument("--image-root", help="folder the captions JSON's image paths are relative to (default: its folder)")
    g.add_argument("--split", default="test", help="Karpathy captions JSON split to use")
    g.add_argument("--csv-img-key", default="filepath", help="CSV/TSV column of image paths")
    g.add_argument("--csv-caption-key", default="title", help="CSV/TSV column of captions")
    g.add_argument("--csv-separator", type=lambda text: text.replace("\\t", "\t"),  # '\t' as typed in a shell
                   help="CSV/TSV column separator, one character or '\\t' (default: from the extension, ',' or tab)")

    g = p.add_argument_group("running")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="autocast dtype")
    g.add_argument("--batch-size", type=int, default=256, help="images (or captions) per forward pass")
    g.add_argument("--workers", type=int, default=0, help="data loader processes")
    g.add_argument("--cache", help="folder for cached image features (zeroshot and probes)")
    g.add_argument("--crop-ratio", type=float, default=None,
                   help="eval centre-crop ratio (default 0.875; 1.0 for --openai and on synthetic data)")
    return p


# ---------------------------------------------------------------------------------------------
# Model and tasks

def load_model(args):
    """(model on args.device in eval mode, {path, normalize, arch, image_size}); ValueError when unreadable,
    in one short line naming the file, why it did not load (LOAD_FAILURES) and the flag to try instead."""
    path = args.checkpoint or args.openai
    what, hint = (("a readable tinyclip checkpoint", "OpenAI/open_clip weights: use --openai") if args.checkpoint
                  else ("readable OpenAI/open_clip weights", "tinyclip checkpoints: use --checkpoint"))
    try:
        with warnings.catch_warnings():  # torch.load warns of a TorchScript archive before it refuses it
            warnings.filterwarnings("ignore", message=".*TorchScript archive")
            model, ckpt = load_checkpoint(path) if args.checkpoint else (load_openai(path), {})
    except FileNotFoundError:
        raise
    except Exception as error:
        cause = error.__context__ or error  # read_checkpoint re-raises torch's error inside a ValueError
        text = f"{type(cause).__name__}: {cause}"
        reason = next((short for phrase, short in LOAD_FAILURES.items() if phrase in text), text.split(". ")[0][:100])
        raise ValueError(f"{path} is not {what} ({reason}); {hint}") from None
    if args.openai and args.crop_ratio is None:
        args.crop_ratio = 1.0  # OpenAI's preprocessing: resize the shorter side to S, centre crop S
    normalize = (ckpt.get("args") or {}).get("normalize", "clip")
    info = {"path": path, "arch": model.config.arch, "image_size": model.visual.image_size, "normalize": normalize}
    return model.to(args.device).eval(), info


def dataset_names(paths):
    """Short table names: 'synthetic' or the folder/file name (full path when two would clash)."""
    short = [os.path.basename(os.path.normpath(p)) or p for p in paths]
    return [s if short.count(s) == 1 else p for s, p in zip(short, paths)]


def probe_data(args):
    """(train, test) for the probes: --train-data/--test-data, or the synthetic train and val splits."""
    if args.train_data is None:
        if args.data not in (None, ["synthetic"]) or args.test_data not in (None, "synthetic"):
            raise ValueError("linear-probe and fewshot need --train-data (and --test-data) unless --data is synthetic")
        return "synthetic", "synthetic"
    if args.test_data is None and (args.data is None or len(args.data) != 1):
        raise ValueError("linear-probe and fewshot with --train-data need --test-data (or one --data)")
    return args.train_data, args.test_data or args.data[0]


@functools.cache
def code_version():
    """{"tinyclip": its version, "commit": the git commit this code runs from, None when unknown (not a
    checkout, no git)}: asked once, never an error."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"tinyclip": tinyclip.__version__, "commit": commit}


def run_task(task, model, info, args):
    """{dataset name: its metrics and their "provenance"} for one task (zeroshot's "average" has none)."""
    data = args.data or ["synthetic"]
    encoding = dict(normalize=info["normalize"], device=args.device, precision=args.precision,
                    batch_size=args.batch_size, workers=args.workers, crop_ratio=args.crop_ratio)
    cached = dict(cache_dir=args.cache, checkpoint=info["path"])  # the image-feature tasks' cache
    csv = dict(csv_img_key=args.csv_img_key, csv_caption_key=args.csv_caption_key, csv_separator=args.csv_separator)
    if task == "zeroshot":
        subsets = args.class_subset or ["none"]
        if len(subsets) not in (1, len(data)):
            raise ValueError(f"--class-subset has {len(subsets)} values for {len(data)} --data entries")
        runs = []  # (data, metrics, what the provenance adds for the task)
        for spec, subset in zip(data, subsets * len(data) if len(subsets) == 1 else subsets):
            subset = None if subset == "none" else subset
            metrics = evaluation.zeroshot(model, spec, label_set=args.label_set, size=args.size, class_subset=subset,
                                          class_names=args.classnames, templates=args.templates, **encoding, **cached)
            templates, prompts = evaluation.template_set(args.templates, spec, args.label_set)  # as zeroshot chose
            class_names = f"synthetic:{args.label_set}" if synthetic_style(spec) else args.classnames or "folder names"
            runs.append((spec, metrics, {"templates": templates, "template_count": len(prompts),
                                         "class_names": class_names, "class_subset": subset}))
    elif task == "retrieval":
        runs = [(spec, evaluation.retrieval(model, spec, size=args.size, image_root=args.image_root, split=args.split,
                                            **csv, **encoding), {}) for spec in data]
    elif task == "score":
        runs = [(data[0], evaluation.score(model, data[0], args.out, **csv, **encoding), {})]
    else:
        train, test = probe_data(args)
        run = probe.linear_probe if task == "linear-probe" else functools.partial(probe.fewshot, ks=args.fewshot_k,
                                                                                    seeds=args.seeds)
        metrics = run(model, train, test, weight_decay=args.weight_decay, label_set=args.label_set, size=args.size,
                      train_size=args.train_size, **encoding, **cached)
        runs = [(test, metrics, {"train_data": train, "train_images": metrics["train"]})]
    # the provenance: what makes a result comparable with another (mismatched templates and crops are the usual
    # reason numbers differ from a paper's), with the preprocessing resolved as the task resolved it
    results = {}
    for name, (spec, metrics, details) in zip(dataset_names([spec for spec, _, _ in runs]), runs):
        synthetic = str(spec).split(":")[0] == "synthetic"
        _, steps = evaluation.preprocessing(model, synthetic, None, info["normalize"], args.crop_ratio)
        results[name] = {**metrics, "provenance": {"data": str(spec), "images": metrics[IMAGE_COUNT[task]], **details,
                                                   **steps, "precision": args.precision, "checkpoint": info["path"],
                                                   **code_version()}}
    if task == "zeroshot" and len(results) > 1:  # the paper's robustness number: the unweighted mean top-1
        if "average" in results:
            raise ValueError("a dataset may not be named 'average'")
        results["average"] = {"top1": sum(result["top1"] for result in results.values()) / len(results)}
    return results


# ---------------------------------------------------------------------------------------------
# Output

def flatten(metrics, prefix=""):
    """Nested metrics -> {"5-shot.mean": 0.41, ...}: numbers, strings and None only (lists dropped)."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, (list, tuple)):
            flat[f"{prefix}{key}"] = value
    return flat


def provenance_line(record):
    """A result's provenance as one `# ...` line, so a pasted table says how its numbers were made."""
    parts = ["{data} {images} images"]
    if "train_data" in record:
        parts = ["train {train_data} {train_images} images", "test {data} {images} images"]
    if "templates" in record:
        parts += ["{template_count} templates ({templates})", "class names: {class_names}"]
        parts += ["class subset: {class_subset}"] if record["class_subset"] else []
    parts += ["{image_size} px {interpolation}, crop {crop_ratio} (resize {resize})", "{normalize} mean/std",
              "{precision}", "checkpoint {checkpoint}", "tinyclip {tinyclip} @ {commit}"]
    return "# " + ", ".join(parts).format(**{**record, "commit": (record["commit"] or "")[:7] or "unknown commit"})


def format_table(task, results):
    """One row per dataset, one aligned column per metric ('-' where a row has none), then each row's
    provenance line."""
    rows = {name: flatten({key: value for key, value in metrics.items() if key != "provenance"})
            for name, metrics in results.items()}
    columns = list(dict.fromkeys(key for row in rows.values() for key in row))

    def cell(value):
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    table = [[task, *columns]] + [[name, *(cell(row.get(c)) for c in columns)] for name, row in rows.items()]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(text.ljust(w) if i == 0 else text.rjust(w) for i, (text, w) in enumerate(zip(line, widths)))
             for line in table]
    return "\n".join(lines + [provenance_line(metrics["provenance"]) for metrics in results.values()
                              if "provenance" in metrics])


def check_args(args):
    """The first problem with the flags' values and combinations, as a message, or None."""
    unknown = [task for task in args.task if task not in TASKS]
    if unknown:
        return f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}"
    if args.batch_size < 1 or args.workers < 0:
        return f"need --batch-size >= 1 and --workers >= 0, got {args.batch_size} and {args.workers}"
    if "score" in args.task and (args.out is None or len(args.data or ["synthetic"]) != 1):
        return "score needs one --data and --out FILE for the key,score CSV"
    if args.out is not None and "score" not in args.task:
        return f"--out is the score task's key,score CSV, but --task is {' '.join(args.task)}: add score or drop --out"
    if args.csv_separator is not None and len(args.csv_separator) != 1:
        return f"--csv-separator must be one character (or '\\t' for a tab), got {args.csv_separator!r}"
    for flag, path in (("--json", args.json), ("--out", args.out)):
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(folder):  # atomic_write creates missing folders under the first that exists
            folder = os.path.dirname(folder)
        if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            return f"{flag} {path}: cannot be written (" + ("it is a folder" if os.path.isdir(path) else
                                                           f"{folder} is not a writable folder") + ")"


def main(argv=None):
    """Parse, check, load the model, run each task (its table; --json rewritten); returns the results."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := check_args(args):
        parser.exit(2, f"eval.py: error: {problem}\n")
    try:
        model, info = load_model(args)
        results = {"model": info}
        for task in dict.fromkeys(args.task):  # each task once, in the order given
            rename = CLIP_BENCHMARK_NAMES.get(task, {}) if args.metric_names == "clip_benchmark" else {}
            results[task] = {row: {rename.get(key, key): value for key, value in metrics.items()}
                             for row, metrics in run_task(task, model, info, args).items()}
            print(format_table(task, results[task]) + "\n")
            if args.json:  # after every task: a later task's failure keeps the finished results
                with atomic_write(args.json, "w") as f:
                    json.dump(results, f, indent=2)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"eval.py: error: {' '.join(str(error).split())}\n")
    if args.json:
        print(f"wrote {args.json}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
