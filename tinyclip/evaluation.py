"""Evaluation as "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024) reports it: the metric math, the one
loop that encodes images and texts, and the tasks zeroshot, retrieval and score end to end (a model
and a dataset spec in, a dict of metrics out). The probes are tinyclip/probe.py.

The protocols are CLIP's (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision"): zero-shot weights from prompt ensembles (section 3.1.4; CLIP's 80 ImageNet
templates in assets/) and, for robustness, ImageNet-V2/-A/-R, ObjectNet and their unweighted
average; MSCOCO image<->text Recall@K with several captions per image; and each pair's image-text
cosine, the paper's quality filter (`train.py --keep-top 0.4 --scores scores.csv`). Accuracies and
recalls are fractions. Ties are pessimistic everywhere: a correct item's rank is the number of
wrong items scoring >= it, within the top k when < k, so a tied wrong class or caption counts
against, whatever order a sort would give.

Every task takes image_features' encoding options: image_size (default: the model's), normalize,
crop_ratio (see preprocessing), device (None: the model's), precision, batch_size and workers;
retrieval and score read a CSV/TSV with csv_img_key, csv_caption_key and csv_separator (default: from
the extension), a captions JSON with image_root (default: its folder) and split (Karpathy's; "test").
"""
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tinyclip.augment import ResizeCentreCrop, eval_size, eval_transform
from tinyclip.checkpoint import save_atomic
from tinyclip.data import write_scores
from tinyclip.model import autocast
from tinyclip.sources import (CaptionsJSON, ImageFolderDataset, load_batches, open_labelled, open_source,
                              synthetic_style)
from tinyclip.synthetic import label_set as synthetic_label_set
from tinyclip.tokenizer import CLIP_VOCAB_SIZE, tokenize

ASSETS = Path(__file__).parent / "assets"
TEMPLATE_FILES = {"imagenet": ASSETS / "imagenet_templates.txt",  # CLIP's 80 ImageNet prompts
                  "generic": ASSETS / "generic_templates.txt"}  # our own 6 plain ones
CLASS_SUBSETS = {"imagenet-a": ASSETS / "imagenet_a_indices.txt", "imagenet-r": ASSETS / "imagenet_r_indices.txt"}
CLASS_NAME_FILES = {"imagenet": ASSETS / "imagenet_classnames.txt"}  # in ImageNet's class order


# ---------------------------------------------------------------------------------------------
# Ranking with pessimistic ties: top-k accuracy and retrieval recall

def _pessimistic_rank(scores, positive):
    """Rank of the best positive in each row of scores [Q, M] (positive [Q, M] bool, one True or
    more per row): the number of negatives scoring >= it. Returns [Q] long."""
    best_positive = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)  # Q, 1
    return ((scores >= best_positive) & ~positive).sum(dim=1)  # Q


def _hits_at(ranks, ks, prefix):
    return {f"{prefix}{k}": (ranks < k).sum().item() / len(ranks) for k in ks}  # exact count / total


def label_ranks(logits, labels, chunk_size=4096):
    """Rank [N] of each integer label [N] in its row of logits [N, C]: wrong classes scoring >= it."""
    ranks = []
    for start in range(0, len(labels), chunk_size):  # chunked: ImageNet is 50k x 1000
        positive = F.one_hot(labels[start:start + chunk_size].long(), logits.shape[1]).bool()  # n, C
        ranks.append(_pessimistic_rank(logits[start:start + chunk_size].float(), positive))
    return torch.cat(ranks)


def topk_accuracy(logits, labels, ks=(1, 5), chunk_size=4096):
    """Top-k accuracy of logits [N, C] against integer labels [N]: {"top1": ..., "top5": ...}; with
    no ties it equals torch.topk's, with ties a tied wrong class counts against."""
    return _hits_at(label_ranks(logits, labels, chunk_size), ks, "top")


def mean_per_class_recall(correct, labels):
    """Mean over the classes present in labels [N] of the fraction of their samples that are correct
    [N] (top-1): CLIP_benchmark's mean_per_class_recall, sklearn's balanced_accuracy_score, which
    leaves out classes without a test sample even when they are predicted."""
    present, index = labels.unique(return_inverse=True)  # C_present; N: each sample's class among them
    hits = torch.zeros(len(present)).index_add_(0, index, correct.float().cpu())  # C_present
    return (hits / torch.bincount(index)).mean().item()


def retrieval_recall(image_features, text_features, text_to_image, ks=(1, 5, 10), chunk_size=1024, normalize=True):
    """Image->text and text->image Recall@K of image_features [N, D] and text_features [T, D], caption t
    describing image text_to_image[t]: an image is found at K when ANY of its captions is in its top K,
    a caption when its image is. Cosines unless normalize=False; `chunk_size` queries at a time, so
    memory stays at chunk_size x max(N, T) scores (MSCOCO: 5k images x 25k captions)."""
    n_images, n_texts = len(image_features), len(text_features)
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long, device=image_features.device)
    images, texts = image_features.float(), text_features.float().to(image_features.device)
    if normalize:
        images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    image_ranks, text_ranks = [], []
    for start in range(0, n_images, chunk_size):
        image_ids = torch.arange(start, min(start + chunk_size, n_images), device=images.device)
        positive = text_to_image[None, :] == image_ids[:, None]  # n, T
        image_ranks.append(_pessimistic_rank(images[start:start + chunk_size] @ texts.t(), positive))
    for start in range(0, n_texts, chunk_size):
        positive = F.one_hot(text_to_image[start:start + chunk_size], n_images).bool()  # t, N
        text_ranks.append(_pessimistic_rank(texts[start:start + chunk_size] @ images.t(), positive))
    return {**_hits_at(torch.cat(image_ranks), ks, "image_to_text_R@"),
            **_hits_at(torch.cat(text_ranks), ks, "text_to_image_R@")}


# ---------------------------------------------------------------------------------------------
# The encode loop

def encode(model, batches, *, device=None, precision="fp32", desc="encoding", total=None):
    """The one encode loop: yields each batch with "image" [B, 3, S, S] / "text" [T, L] replaced by raw
    features [B, D] / [T, D] (float32, CPU), the rest passed through; no grad, eval mode (restored
    afterwards), autocast for bf16/fp16."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc=desc, total=total):
            with torch.no_grad(), autocast(device, precision):  # model.encode_image / model.encode_text
                features = {kind: getattr(model, f"encode_{kind}")(batch[kind].to(device)).float().cpu()
                            for kind in ("image", "text") if kind in batch}
            yield {**batch, **features}
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# Inputs: class names, templates, the model's vocabulary, preprocessing, image features

def _lines(name, built_in, what):
    """The non-blank lines, stripped, of a built-in asset named `name` or of the file `name`."""
    path = built_in.get(name, Path(name))
    if not path.is_file():
        raise FileNotFoundError(f"no such {what} file: {name} (built in: {', '.join(built_in)})")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_class_names(class_names, folders: list[str]):
    """None/list -> itself; 'imagenet' (the 1000 shipped names) or a file: one name per line, or
    `folder<TAB>name` lines, looked up by the dataset's class folder names."""
    if class_names is None or isinstance(class_names, (list, tuple)):
        return class_names
    lines = _lines(class_names, CLASS_NAME_FILES, "class names")
    if not all("\t" in line for line in lines):
        return lines
    mapping = {folder.strip(): name.strip() for folder, name in (line.split("\t", 1) for line in lines)}
    missing = [folder for folder in folders if folder not in mapping]
    if missing:
        raise ValueError(f"{class_names} names no class for folder {missing[0]!r} ({len(missing)} missing)")
    return [mapping[folder] for folder in folders]


def template_set(templates, data="synthetic", label_set="shape-color"):
    """(name, templates) that zeroshot uses: a list ("custom"), 'imagenet' (CLIP's 80), 'generic' (6 of ours) or
    a file, one per line (that name); None: CLIP's 80 ("imagenet") on folders, the label set's on synthetic data
    ("synthetic:<label set>"). One function for zeroshot and eval.py, so a result's provenance names what it used."""
    if isinstance(templates, (list, tuple)):
        return "custom", list(templates)
    if templates is None and synthetic_style(data):
        return f"synthetic:{label_set}", synthetic_label_set(label_set)[1]
    name = str(templates or "imagenet")
    return name, _lines(name, TEMPLATE_FILES, "templates")


def _check_vocabulary(model):
    """The CLIP tokenizer emits ids up to 49407: a smaller embedding table would index out of range."""
    if model.config.vocab_size < CLIP_VOCAB_SIZE:
        raise ValueError(f"the model's vocabulary has {model.config.vocab_size} tokens but the CLIP tokenizer "
                         f"needs {CLIP_VOCAB_SIZE}")


def preprocessing(model, synthetic, image_size, normalize, crop_ratio):
    """(augment.eval_transform, what it does: {"image_size", "resize", "interpolation", "crop_ratio",
    "normalize"}); image_size defaults to the model's, crop_ratio to 1.0 on synthetic data (the scenes
    fill the canvas, as in training), else to 0.875 (the paper's resize-then-centre-crop; eval.py gives
    OpenAI weights their own preprocessing, 1.0). The shorter side is resized to `resize`, then the
    centred image_size square is kept."""
    image_size = image_size or model.visual.image_size
    if crop_ratio is None:
        crop_ratio = 1.0 if synthetic else 0.875
    steps = {"image_size": image_size, "resize": eval_size(image_size, crop_ratio),
             "interpolation": ResizeCentreCrop.INTERPOLATION.name.lower(),
             "crop_ratio": crop_ratio, "normalize": normalize}
    return eval_transform(image_size, normalize, crop_ratio), steps


def image_features(model, dataset, *, image_size=None, normalize="clip", crop_ratio=None, device=None, precision="fp32",
                   batch_size=256, workers=0, cache_dir=None, checkpoint=None):
    """{"image": [N, D] raw features, "labels": [N]} of an open_labelled dataset. With cache_dir, kept in
    a file keyed by the checkpoint file (resolved path, size, mtime: re-training in place changes the
    key) and what they come from (the data, a folder's files and labels, transform, precision)."""
    folder = isinstance(dataset, ImageFolderDataset)
    transform, steps = preprocessing(model, not folder, image_size, normalize, crop_ratio)
    transform_id = "eval:{image_size}:{normalize}:{crop_ratio}".format(**steps)  # the cache keys as before
    description = (f"folder:{os.path.abspath(dataset.root)}" if folder else
                   f"synthetic:{dataset.pairs.split}:{dataset.pairs.size}:{','.join(dataset.classes)}"
                   + (f":{dataset.pairs.style}" if dataset.pairs.style != "photo" else ""))  # photo: the keys as before
    if cache_dir is not None:
        path, stat = Path(checkpoint).resolve(), Path(checkpoint).stat()
        listing = "".join(f"\n{file}\t{label}" for file, label in dataset.samples) if folder else ""
        what = f"{path}\n{stat.st_size}\n{stat.st_mtime_ns}\n{description}\n{transform_id}\n{precision}{listing}"
        cache_file = Path(cache_dir) / f"image-{hashlib.sha256(what.encode()).hexdigest()[:16]}.pt"
        if cache_file.is_file():
            return torch.load(cache_file, map_location="cpu", weights_only=True)
    skipped = dataset.skipped if folder else Counter()
    batches = load_batches(dataset.__getitem__, len(dataset), transform, skipped=skipped, batch_size=batch_size,
                           workers=workers)
    encoded = list(encode(model, batches, device=device, precision=precision, desc="image features",
                          total=-(-len(dataset) // batch_size)))
    if not encoded:
        raise ValueError(f"no readable image in {description} (skipped: {dict(skipped)})")
    features = {"image": torch.cat([batch["image"] for batch in encoded]),  # N, D
                "labels": torch.tensor([label for batch in encoded for label in batch["target"]])}  # N
    if cache_dir is not None:
        save_atomic(features, cache_file)
    return features


# ---------------------------------------------------------------------------------------------
# Zero-shot classification and the robustness benchmarks' class subsets and mappings

def zeroshot_classifier(model, class_names, templates, *, device=None, precision="fp32", batch_size=256):
    """Zero-shot classifier weights [D, C]: column c is the L2-normalised mean over templates of the
    L2-normalised text embeddings of `template.format(class_names[c])` (CLIP's prompt ensemble)."""
    if not class_names or not templates:
        raise ValueError("zeroshot_classifier needs at least one class name and one template")
    if any("{}" not in template for template in templates):
        raise ValueError(f"every template needs a '{{}}' placeholder for the class name, got {templates}")
    prompts = [template.format(name) for name in class_names for template in templates]  # class-major
    batches = ({"text": tokenize(prompts[i:i + batch_size], context_length=model.config.context_length)}
               for i in range(0, len(prompts), batch_size))
    encoded = encode(model, batches, device=device, precision=precision, desc="class prompts",
                     total=-(-len(prompts) // batch_size))
    texts = torch.cat([batch["text"] for batch in encoded])  # C * T, D
    per_template = F.normalize(texts, dim=-1).view(len(class_names), len(templates), -1)  # C, T, D
    return F.normalize(per_template.mean(dim=1), dim=-1).t().contiguous()  # D, C


def zeroshot_logits(image_features, classifier):
    """Cosine-similarity logits [N, C] of image features [N, D] against classifier weights [D, C]."""
    return F.normalize(image_features.float(), dim=-1) @ classifier.to(image_features.device).float()


def load_class_subset(name_or_path):
    """ImageNet class indices of a class subset: "imagenet-a", "imagenet-r" or a file of one class
    index per line (blank lines and `#` comments ignored). Label j is the subset's j-th class: for
    ImageFolder copies of ImageNet-A/-R (sorted wnid folders) that holds for the shipped ascending
    lists, from the datasets' authors (hendrycks on GitHub)."""
    path = CLASS_SUBSETS.get(str(name_or_path).lower(), Path(name_or_path))
    if not path.is_file():
        raise FileNotFoundError(f"class subset {name_or_path!r}: no such file (built in: {sorted(CLASS_SUBSETS)})")
    entries = [entry for entry in (line.split("#")[0].strip() for line in path.read_text().splitlines()) if entry]
    if not entries:
        raise ValueError(f"class subset file {path} lists no classes")
    if bad := next((entry for entry in entries if not entry.isdigit()), None):
        raise ValueError(f"class subset {path}: {bad!r} is not a class index")
    indices = [int(entry) for entry in entries]
    if len(set(indices)) != len(indices):
        raise ValueError(f"class subset {path} lists a class twice")
    return indices


def subset_logits(logits, class_indices):
    """Keep only the columns of `class_indices` (logits [N, 1000] -> [N, S]); column j is label j: the
    ImageNet-A/-R protocol, where the argmax is over the dataset's 200 classes only."""
    return logits.index_select(1, torch.as_tensor(class_indices, dtype=torch.long, device=logits.device))


def mapped_correct(logits, labels, class_to_indices):
    """Top-1 correctness [N] (bool) when dataset class c maps to the set of model classes
    class_to_indices[c] (ObjectNet -> ImageNet): logits [N, C_model], labels [N]. The argmax only
    considers model classes in some mapping (ObjectNet's usual protocol)."""
    correct_set = torch.zeros(len(class_to_indices), logits.shape[1], dtype=torch.bool, device=logits.device)
    for c, indices in enumerate(class_to_indices):  # C_data, C_model
        correct_set[c, torch.as_tensor(list(indices), dtype=torch.long)] = True
    scores = logits.float().masked_fill(~correct_set.any(dim=0), float("-inf"))
    return correct_set[labels.long(), scores.argmax(dim=1)]


def zeroshot(model, data="synthetic", *, label_set="shape-color", size=1000, class_names=None, templates=None,
             class_subset=None, device=None, precision="fp32", batch_size=256, **options):
    """Zero-shot accuracy: {"top1", "top5", "mean_per_class_recall", "n", "classes"} (+ "skipped").

    data: "synthetic" (val split, `size` images, `label_set`'s names and templates) or an ImageFolder
    directory. class_names: None (folder names, '_' read as a space), "imagenet", a file or a list.
    templates: None (the label set's on synthetic, CLIP's 80 on folders), "imagenet", "generic", a
    file or a list. Integer-named folders (ImageNet-V2's "0".."999") are indices into class_names.
    class_subset (folders only): "imagenet-a", "imagenet-r" or a .txt of class indices (the sorted
    folders are that subset, in order), or an ObjectNet-style .json {folder: [model class indices]}
    (mapped_correct; top5 is None; unmapped folders left out). options: image_features' (see the top),
    and cache_dir and checkpoint for its feature cache."""
    _check_vocabulary(model)
    if synthetic_style(data) and (class_names is not None or class_subset is not None):
        raise ValueError("class names and class subsets apply to ImageFolder data; synthetic classes come "
                         "from the label set")
    dataset = open_labelled(data, "val", label_set=label_set, size=size)
    folder = isinstance(dataset, ImageFolderDataset)
    names, subset, mapping = (_folder_classes(data, dataset, class_names, class_subset) if folder
                              else (dataset.classes, None, None))
    templates = template_set(templates, data, label_set)[1]
    classifier = zeroshot_classifier(model, names, templates, device=device, precision=precision,
                                     batch_size=batch_size)  # D, C
    features = image_features(model, dataset, device=device, precision=precision, batch_size=batch_size, **options)
    logits, labels = zeroshot_logits(features["image"], classifier), features["labels"]  # N, C; N
    if subset is not None:
        logits = subset_logits(logits, subset)  # N, S: the argmax over the dataset's classes only
    if mapping is not None:
        correct, classes = mapped_correct(logits, labels, list(mapping.values())), len(mapping)  # N
        top = {"top1": correct.float().mean().item(), "top5": None}
    else:
        ranks, classes = label_ranks(logits, labels), logits.shape[1]  # N
        correct, top = ranks == 0, _hits_at(ranks, (1, 5), "top")
    result = {**top, "mean_per_class_recall": mean_per_class_recall(correct, labels), "n": len(labels),
              "classes": classes}
    return {**result, "skipped": dict(dataset.skipped)} if folder and dataset.skipped else result


def _folder_classes(data, folder, class_names, class_subset):
    """(class names of the classifier, class subset or None, class mapping or None) for a folder,
    relabelling folder.samples where needed: integer-named folders ("0".."999", ImageNet-V2's layout)
    are class indices, label = int(name), and every class competes; a mapping drops the images of
    unmapped folders and numbers the rest in mapping order."""
    folders, subset, mapping, used = folder.classes, None, None, []
    numbered = all(name.isdigit() for name in folders)
    if str(class_subset).endswith(".json"):
        mapping = _read_mapping(class_subset, folders)
        kept = {folders.index(name): j for j, name in enumerate(mapping)}
        folder.samples = [(path, kept[label]) for path, label in folder.samples if label in kept]
        used = [i for indices in mapping.values() for i in indices]
    elif class_subset is not None:
        used = subset = load_class_subset(class_subset)
        if len(subset) != len(folders):
            raise ValueError(f"class subset {class_subset} has {len(subset)} classes but {data} has "
                             f"{len(folders)} class folders")
    elif numbered:
        folder.samples = [(path, int(folders[label])) for path, label in folder.samples]
        used = [int(name) for name in folders]
    names = read_class_names(class_names, sorted(folders, key=int) if numbered and class_subset is None else folders)
    if names is None:
        if numbered:
            raise ValueError(f"the class folders of {data} are class indices: give class names (e.g. 'imagenet')")
        names = [name.replace("_", " ") for name in folders]
    if not used and len(names) != len(folders):
        hint = " (are the folders a subset of the classes? give a class subset)" if len(names) > len(folders) else ""
        raise ValueError(f"{len(names)} class names for {len(folders)} class folders in {data}{hint}")
    if used and max(used) >= len(names):
        raise ValueError(f"{len(names)} class names, but {data} uses class index {max(used)}")
    return names, subset, mapping


def _read_mapping(path, folders):
    """ObjectNet-style {dataset class: [model class indices]}, in folder order, for the folders it maps
    (names compared case-blind, with '_' read as a space)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such class mapping file: {path}")
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not all(isinstance(v, list) and v and all(isinstance(i, int) for i in v)
                                            for v in raw.values()):
        raise ValueError(f"{path} must be a JSON object mapping class names to non-empty lists of class indices")

    def canonical(name):
        return name.lower().replace("_", " ").strip()

    lookup = {canonical(key): value for key, value in raw.items()}
    mapping = {name: lookup[canonical(name)] for name in folders if canonical(name) in lookup}
    if not mapping:
        raise ValueError(f"{path} maps none of the {len(folders)} class folders")
    return mapping


# ---------------------------------------------------------------------------------------------
# Image-text pairs: retrieval and scoring

def _pairs(model, spec, *, skipped, image_root=None, split="test", csv_img_key="filepath", csv_caption_key="title",
           csv_separator=None, image_size=None, normalize="clip", crop_ratio=None, device=None, precision="fp32",
           batch_size=256, workers=0):
    """(source, its readable pairs encoded batch by batch: "index" [B] source indices, "image" [B, D],
    "text" [T, D] for every caption, "text_to_image" [T] in 0..B-1), so scoring millions of pairs needs
    memory for scores only."""
    _check_vocabulary(model)
    source = (CaptionsJSON(spec, image_root, split) if spec.lower().endswith(".json")
              else open_source(spec, csv_img_key, csv_caption_key, csv_separator))
    skipped.update(source.skipped)
    transform, _ = preprocessing(model, spec.split(":")[0] == "synthetic", image_size, normalize, crop_ratio)

    def batches():
        for batch in load_batches(source.load, len(source), transform, skipped=skipped, batch_size=batch_size,
                                  workers=workers):
            captions = batch.pop("target")
            batch["text"] = tokenize([c for caps in captions for c in caps], context_length=model.config.context_length)
            counts = torch.tensor([len(caps) for caps in captions])
            batch["text_to_image"] = torch.arange(len(captions)).repeat_interleave(counts)  # T
            yield batch

    return source, encode(model, batches(), device=device, precision=precision, desc="pairs",
                          total=-(-len(source) // batch_size))


def retrieval(model, data="synthetic", *, size=1000, **options):
    """Image->text and text->image Recall@1/5/10 over every caption of every image, plus counts. data:
    "synthetic" (its val split, `size` images), a tinyclip.sources spec, or COCO-style captions JSON
    (Karpathy's or COCO's `captions_*.json`). Options: see the top."""
    skipped, spec = Counter(), str(data)
    if spec.split(":")[0] == "synthetic" and "split=" not in spec:
        spec = f"synthetic:split=val,size={size}" if spec == "synthetic" else spec + ",split=val"
    source, batches = _pairs(model, spec, skipped=skipped, **options)
    encoded = list(batches)
    if not encoded:
        raise ValueError(f"no readable pair in {source.name} (skipped: {dict(+skipped)})")
    offsets = torch.tensor([0] + [len(batch["index"]) for batch in encoded]).cumsum(0)  # first image of each batch
    images = torch.cat([batch["image"] for batch in encoded])  # N, D
    texts = torch.cat([batch["text"] for batch in encoded])  # T, D
    text_to_image = torch.cat([batch["text_to_image"] + offset for batch, offset in zip(encoded, offsets)])  # T
    result = {**retrieval_recall(images, texts, text_to_image, ks=(1, 5, 10)), "images": len(images),
              "captions": len(texts)}
    return {**result, "skipped": dict(+skipped)} if +skipped else result  # unary +: drop zero counts


def score(model, data, out_path, **options):
    """Write `key,score` for every pair of `data` read as train.py reads it ('synthetic': the train split),
    so the keys are those --keep-top filters; returns {"pairs", "scored", "skipped", "mean", "out"}. A
    score is the MEAN cosine of the image with each of its captions, the similarity training sees on
    average (it draws one caption at random); unreadable pairs get -inf, ranked last, never kept.
    Options: see the top."""
    scores, skipped = {}, Counter()  # source index -> score; reasons
    source, batches = _pairs(model, str(data), skipped=skipped, **options)
    for batch in batches:
        per_caption = F.cosine_similarity(batch["image"][batch["text_to_image"]], batch["text"], dim=-1)  # T
        totals = torch.zeros(len(batch["index"])).index_add_(0, batch["text_to_image"], per_caption)  # B
        per_image = totals / torch.bincount(batch["text_to_image"], minlength=len(totals))  # B: mean over captions
        scores.update(zip(batch["index"], per_image.tolist()))
    if not scores:
        raise ValueError(f"no readable pair in {source.name} (skipped: {dict(+skipped)})")
    write_scores(out_path, [source.key(i) for i in range(len(source))],
                 [scores.get(i, float("-inf")) for i in range(len(source))])
    return {"pairs": len(source), "scored": len(scores), "skipped": len(source) - len(scores),
            "mean": sum(scores.values()) / len(scores), "out": str(out_path)}
