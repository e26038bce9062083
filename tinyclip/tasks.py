"""Evaluation tasks end to end: a model and a dataset spec in, a dict of metrics out.

These are the evaluations "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024) reports, run on the data a
user has: zero-shot classification (ImageNet with CLIP's 80 templates, and the robustness variants
-V2, -A, -R, -Sketch and ObjectNet), image-text retrieval (MSCOCO Recall@K), linear probing and
5-/10-shot classification of the frozen image tower, and the image-text scores of the paper's data
quality study (`train.py --keep-top 0.4 --scores scores.csv`). The metric math lives in
tinyclip/evaluation.py and tinyclip/probe.py; this module finds the data, preprocesses it, encodes
it in batches (no_grad, autocast for bf16/fp16, tqdm) and calls that math.

Data specs. "synthetic" is the built-in generator (tinyclip/synthetic.py): for zero-shot, retrieval
and probe tests it is the held-out `val` split (`size` images); for linear-probe/few-shot training
it is the `train` split (`train_size` images); for `score` it is the spec exactly as train.py reads
it ('synthetic' or 'synthetic:noise=0.3,size=5000' = the train split), because scores must name the
training pairs. A directory is an ImageFolder (root/class/image.jpg) for classification; pairs for
retrieval and scoring are any tinyclip.data source (CSV/TSV, tar shards, image + .txt folders) or a
COCO-style captions JSON (Karpathy's `dataset_coco.json`, test split by default, or COCO's own
`captions_*.json`; images under `image_root`, default the JSON's folder).

Preprocessing is augment.eval_transform(image_size, normalize, crop_ratio): crop_ratio defaults to
1.0 on synthetic data (scenes fill the canvas, as in training) and to 0.875 elsewhere (the paper's
resize-then-centre-crop; OpenAI's own preprocessing is 1.0, which eval.py uses for --openai).
`device=None` means the model's device. A feature cache (cache_dir) is keyed by `fingerprint` (a
string naming the weights; eval.py derives it from the checkpoint file) or else a hash of the weights.
"""
import contextlib
import dataclasses
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tinyclip.augment import eval_transform
from tinyclip.data import ImageFolderDataset, SkipSample, open_source
from tinyclip.evaluation import (AUTOCAST_DTYPES, extract_features, load_class_subset, mapped_accuracy, retrieval_recall,
                                 score_pairs, subset_logits, topk_accuracy, write_scores, zeroshot_classifier,
                                 zeroshot_logits)
from tinyclip.probe import fewshot_eval, linear_probe as fit_linear_probe
from tinyclip.sources import CaptionsJSON
from tinyclip.synthetic import SyntheticClassification
from tinyclip.tokenizer import CLIP_VOCAB_SIZE, tokenize

ASSETS = Path(__file__).parent / "assets"
CLASS_NAME_FILES = {"imagenet": ASSETS / "imagenet_classnames.txt"}  # 1000 names in ImageNet class order
TEMPLATE_FILES = {"imagenet": ASSETS / "imagenet_templates.txt",  # CLIP's 80 ImageNet prompts
                  "generic": ASSETS / "generic_templates.txt"}  # our own 6 plain ones


# ---------------------------------------------------------------------------------------------
# Inputs: class names, templates, preprocessing, the model's device and vocabulary, cache keys

def _read_lines(path, what, built_in):
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such {what} file: {path} (built in: {', '.join(built_in)})")
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def read_templates(templates):
    """None/list -> itself; 'imagenet' (CLIP's 80), 'generic' (6 of ours) or a file, one per line."""
    if templates is None or isinstance(templates, (list, tuple)):
        return templates
    return [line.strip() for line in _read_lines(TEMPLATE_FILES.get(templates, templates), "templates", TEMPLATE_FILES)]


def read_class_names(class_names, folders=None):
    """None/list -> itself; 'imagenet' or a file: one name per line, or `folder<TAB>name` lines
    (which are looked up by the dataset's folder names)."""
    if class_names is None or isinstance(class_names, (list, tuple)):
        return class_names
    lines = _read_lines(CLASS_NAME_FILES.get(class_names, class_names), "class names", CLASS_NAME_FILES)
    if lines and all("\t" in line for line in lines) and folders is not None:
        mapping = {folder.strip(): name.strip() for folder, name in (line.split("\t", 1) for line in lines)}
        missing = [folder for folder in folders if folder not in mapping]
        if missing:
            raise ValueError(f"{class_names} names no class for folder {missing[0]!r} ({len(missing)} missing)")
        return [mapping[folder] for folder in folders]
    return [line.strip() for line in lines]


def _device(model, device):
    if device is not None:
        return torch.device(device)
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_vocabulary(model):
    """The CLIP tokenizer emits ids up to 49407: a smaller embedding table would index out of range."""
    n = model.config.vocab_size
    if n < CLIP_VOCAB_SIZE:
        raise ValueError(f"the model's vocabulary has {n} tokens but the CLIP tokenizer needs {CLIP_VOCAB_SIZE}")


def _preprocessing(model, image_size, normalize, crop_ratio, synthetic):
    image_size = image_size or model.visual.image_size
    crop_ratio = crop_ratio if crop_ratio is not None else (1.0 if synthetic else 0.875)
    return eval_transform(image_size, normalize, crop_ratio), f"eval:{image_size}:{normalize}:{crop_ratio}"


def _cache_name(model, fingerprint, *parts):
    """A file-name-safe hash of the weights' identity plus what the features were computed from."""
    if fingerprint is None:  # no name for the weights: hash the weights themselves
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        fingerprint = digest.hexdigest()
    return hashlib.sha256("\n".join(map(str, (fingerprint, *parts))).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Classification data: (images [B, 3, S, S], labels [B]) batches, class folders, encoded features

class _Transformed(Dataset):
    """(PIL image, label) items -> (transform(image), label)."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        return self.transform(image), label


@dataclasses.dataclass
class ClassificationData:
    """What the tasks need of a labelled split: batches to encode and how to name its classes."""
    batches: object  # batches() -> an iterable of (images [B, 3, S, S], labels [B])
    classes: list  # class names (synthetic) or folder names in label order (ImageFolder)
    templates: list  # the label set's templates; None for folders
    description: str  # what the features are computed from, for the cache key
    folder: ImageFolderDataset = None


def classification_data(data, split, *, transform, label_set, size, batch_size, workers):
    """The synthetic `split` (`size` images of `label_set`) or an ImageFolder directory."""
    if data == "synthetic":
        dataset = SyntheticClassification(split, label_set=label_set, size=size)
        loader = DataLoader(_Transformed(dataset, transform), batch_size=batch_size, num_workers=workers)
        return ClassificationData(lambda: loader, dataset.classes, dataset.templates,
                                  f"synthetic:{split}:{label_set}:{len(dataset)}")
    dataset = ImageFolderDataset(str(data), transform)  # label j = j-th folder name in sorted order

    def batches():  # ImageFolderDataset skips and counts bad images; none readable is an error
        yielded = 0
        for images, labels in dataset.batches(batch_size, workers):
            yielded += 1
            yield images, labels  # B, 3, S, S; B
        if not yielded:
            raise ValueError(f"no readable image in {data} (skipped: {dict(dataset.skipped)})")

    return ClassificationData(batches, dataset.classes, None, f"folder:{os.path.abspath(data)}", dataset)


def _image_features(model, data, transform_id, *, device, precision, cache_dir, fingerprint):
    """{"image": [N, D], "labels": [N]} from extract_features, cached under cache_dir when given."""
    name = None
    if cache_dir:
        listing = "\n".join(f"{path}\t{label}" for path, label in data.folder.samples) if data.folder else ""
        name = _cache_name(model, fingerprint, data.description, listing, transform_id, precision)
    return extract_features(model, data.batches(), "image", device=device, precision=precision, cache_dir=cache_dir,
                            fingerprint=name)


# ---------------------------------------------------------------------------------------------
# Zero-shot classification

def zeroshot(model, data="synthetic", *, image_size=None, normalize="clip", label_set="shape-color", size=1000,
             class_names=None, templates=None, class_subset=None, device=None, precision="fp32", batch_size=256,
             workers=0, cache_dir=None, fingerprint=None, crop_ratio=None):
    """Zero-shot top-1/top-5 accuracy: {"top1", "top5", "n", "classes"} (+ "skipped" bad images).

    data: "synthetic" (val split, `size` images, `label_set`'s names and templates) or an ImageFolder
    directory. class_names: None (folder names, '_' read as a space), "imagenet", a file or a list.
    templates: None (the label set's on synthetic, CLIP's 80 on folders), "imagenet", "generic", a
    file or a list. Integer-named folders (ImageNet-V2's "0".."999") are indices into class_names.
    class_subset (folders only): "imagenet-a", "imagenet-r" or a .txt of class indices (the sorted
    folders are that subset, in order; the classifier spans all class_names), or an ObjectNet-style
    .json {folder: [model class indices]}, scored with evaluation.mapped_accuracy (top5 is None);
    folders absent from the mapping are left out.
    """
    device = _device(model, device)
    _check_vocabulary(model)
    if data == "synthetic" and (class_names is not None or class_subset is not None):
        raise ValueError("class names and class subsets apply to ImageFolder data; synthetic classes come "
                         "from the label set")
    transform, transform_id = _preprocessing(model, image_size, normalize, crop_ratio, data == "synthetic")
    split = classification_data(data, "val", transform=transform, label_set=label_set, size=size,
                                batch_size=batch_size, workers=workers)
    if templates is None:
        templates = split.templates or "imagenet"  # the label set's on synthetic data, CLIP's 80 on folders
    templates = read_templates(templates)
    names, subset, mapping = split.classes, None, None
    if split.folder is not None:
        names, subset, mapping = _folder_classes(data, split, class_names, class_subset)

    classifier = zeroshot_classifier(model, names, templates, device=device, batch_size=batch_size)  # D, C
    features = _image_features(model, split, transform_id, device=device, precision=precision, cache_dir=cache_dir,
                               fingerprint=fingerprint)
    logits = zeroshot_logits(features["image"].to(device), classifier)  # N, C
    labels = features["labels"].to(device)  # N
    if mapping is not None:
        result = {"top1": mapped_accuracy(logits, labels, list(mapping.values())), "top5": None,
                  "n": len(labels), "classes": len(mapping)}
    else:
        if subset is not None:
            logits = subset_logits(logits, subset)  # N, S: the argmax over the dataset's classes only
        result = {**topk_accuracy(logits, labels, ks=(1, 5)), "n": len(labels), "classes": logits.shape[1]}
    skipped = split.folder.skipped if split.folder is not None else None
    return {**result, "skipped": dict(skipped)} if skipped else result


def _folder_classes(data, split, class_names, class_subset):
    """(class names of the classifier, class subset or None, class mapping or None) for a folder.

    Relabels split.folder.samples where needed: integer-named folders ("0".."999", ImageNet-V2's
    layout) are class indices, label = int(name), and every class competes; a mapping drops the
    images of unmapped folders and numbers the rest in mapping order.
    """
    folders, subset, mapping, used = split.classes, None, None, []
    samples = split.folder.samples
    if str(class_subset).endswith(".json"):
        mapping = _read_mapping(class_subset, folders)
        kept = {folders.index(folder): j for j, folder in enumerate(mapping)}
        split.folder.samples = [(path, kept[label]) for path, label in samples if label in kept]
        used = [i for indices in mapping.values() for i in indices]
    elif class_subset is not None:
        used = subset = load_class_subset(class_subset)
        if len(subset) != len(folders):
            raise ValueError(f"class subset {class_subset} has {len(subset)} classes but {data} has "
                             f"{len(folders)} class folders")
    elif all(folder.isdigit() for folder in folders):
        split.folder.samples = [(path, int(folders[label])) for path, label in samples]
        used = [int(folder) for folder in folders]
    names = read_class_names(class_names, sorted(folders, key=int) if used and not subset and not mapping else folders)
    if names is None:
        if all(folder.isdigit() for folder in folders):
            raise ValueError(f"the class folders of {data} are class indices: give class names (e.g. 'imagenet')")
        names = [folder.replace("_", " ") for folder in folders]
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
    mapping = {folder: lookup[canonical(folder)] for folder in folders if canonical(folder) in lookup}
    if not mapping:
        raise ValueError(f"{path} maps none of the {len(folders)} class folders")
    return mapping


# ---------------------------------------------------------------------------------------------
# Linear probe and few-shot on frozen image features

def _probe_features(model, train_data, test_data, *, image_size=None, normalize="clip", label_set="shape-color",
                    size=1000, train_size=2000, device=None, precision="fp32", batch_size=256, workers=0,
                    cache_dir=None, fingerprint=None, crop_ratio=None):
    """(train features, train labels, test features, test labels, number of classes)."""
    device = _device(model, device)
    splits = []
    for data, split_name, n in ((train_data, "train", train_size), (test_data, "val", size)):
        transform, transform_id = _preprocessing(model, image_size, normalize, crop_ratio, data == "synthetic")
        split = classification_data(data, split_name, transform=transform, label_set=label_set, size=n,
                                    batch_size=batch_size, workers=workers)
        features = _image_features(model, split, transform_id, device=device, precision=precision,
                                   cache_dir=cache_dir, fingerprint=fingerprint)
        splits.append((features["image"].to(device), features["labels"].to(device), split.classes))
    (train_x, train_y, train_classes), (test_x, test_y, test_classes) = splits
    if list(train_classes) != list(test_classes):
        differ = next((f"{a!r} vs {b!r}" for a, b in zip(train_classes, test_classes) if a != b), "")
        raise ValueError(f"a probe needs the same classes in train and test data: {train_data} has "
                         f"{len(train_classes)}, {test_data} has {len(test_classes)} {differ}".rstrip())
    return train_x, train_y, test_x, test_y, len(train_classes)


def linear_probe(model, train_data="synthetic", test_data="synthetic", *, weight_decay=None, **options):
    """Logistic-regression probe on frozen image features: {"top1", "weight_decay", "train", "test", "classes"}.

    Synthetic: train on `train_size` (2000) images of the train split, test on `size` (1000) of the
    val split, classes from `label_set`. Folders: a train and a test ImageFolder with the same class
    folders. weight_decay=None chooses it on a held-out 20% of the training split (tinyclip.probe); a
    number fixes it. options: label_set, size, train_size, and image_size, normalize, device,
    precision, batch_size, workers, cache_dir, fingerprint, crop_ratio as for zeroshot.
    """
    train_x, train_y, test_x, test_y, classes = _probe_features(model, train_data, test_data, **options)
    result = fit_linear_probe(train_x, train_y, test_x, test_y, num_classes=classes, weight_decay=weight_decay)
    return {**result, "train": len(train_y), "test": len(test_y), "classes": classes}


def fewshot(model, train_data="synthetic", test_data="synthetic", *, ks=(5, 10), seeds=(0, 1, 2), weight_decay=None,
            **options):
    """k-shot probes, k training examples per class drawn per seed, tested on the whole test split:
    {"5-shot": {"mean", "std", "per_seed", "weight_decays"}, ..., "classes"}. Data, weight_decay and
    options as for linear_probe (with weight_decay=None the search runs on each k-shot set)."""
    train_x, train_y, test_x, test_y, classes = _probe_features(model, train_data, test_data, **options)
    results = fewshot_eval(train_x, train_y, test_x, test_y, ks=tuple(ks), seeds=tuple(seeds), num_classes=classes,
                           weight_decay=weight_decay)
    return {**{f"{k}-shot": value for k, value in results.items()}, "classes": classes}


# ---------------------------------------------------------------------------------------------
# Image-text pairs: retrieval and scoring

def open_pairs(spec, *, eval_split=True, size=1000, image_root=None, split="test", **source_options):
    """A pairs source for a spec; with eval_split, bare 'synthetic' is the val split of `size` images."""
    spec = str(spec)
    if spec.lower().endswith(".json"):
        return CaptionsJSON(spec, image_root, split)
    if eval_split and spec == "synthetic":
        spec = f"synthetic:split=val,size={size}"
    elif eval_split and spec.startswith("synthetic:") and "split=" not in spec:
        spec += ",split=val"
    return open_source(spec, **source_options)


class _PairItems(Dataset):
    """source[i] -> (index, key, transform(image) or None, captions or the reason it was skipped)."""

    def __init__(self, source, transform):
        self.source, self.transform = source, transform

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        key = self.source.key(index)
        try:
            image, captions = self.source.load(index)
        except SkipSample as bad:
            return index, key, None, bad.reason
        return index, key, self.transform(image), captions


def _collate_pairs(items):
    return [item for item in items if item[2] is not None], [item for item in items if item[2] is None]


def encode_pairs(model, source, transform, skipped, *, device, precision="fp32", batch_size=256, workers=0):
    """Encode a pairs source batch by batch (so scoring millions of pairs needs memory for scores only).

    Yields {"index", "key": the batch's readable pairs; "image" [B, D] and "text" [T, D] raw features
    (float32, CPU; every caption of every image); "text_to_image" [T] (0..B-1); "bad": [(index, key)]
    of pairs that could not be read}, counting why in `skipped` (a Counter). No grad, eval mode,
    autocast for bf16/fp16.
    """
    _check_vocabulary(model)
    skipped.update(source.skipped)
    dtype = AUTOCAST_DTYPES[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    loader = DataLoader(_PairItems(source, transform), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate_pairs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast:
            for good, bad in tqdm(loader, desc="pairs"):
                skipped.update(reason for *_, reason in bad)
                indices, keys, images, captions = zip(*good) if good else ((), (), (), ())
                counts = torch.tensor([len(c) for c in captions], dtype=torch.long)
                ids = tokenize([c for caps in captions for c in caps], context_length=model.config.context_length)
                image = model.encode_image(torch.stack(images).to(device)).float().cpu() if good else None  # B, D
                text = [model.encode_text(chunk.to(device)).float().cpu() for chunk in ids.split(batch_size)]
                yield {"index": list(indices), "key": list(keys), "image": image,
                       "text": torch.cat(text) if text else None,  # T, D
                       "text_to_image": torch.arange(len(counts)).repeat_interleave(counts),  # T
                       "bad": [(index, key) for index, key, _, _ in bad]}
    finally:
        model.train(was_training)


def retrieval(model, data="synthetic", *, image_size=None, normalize="clip", size=1000, image_root=None, split="test",
              device=None, precision="fp32", batch_size=256, workers=0, crop_ratio=None, **source_options):
    """Image->text and text->image Recall@1/5/10 over every caption of every image, plus counts."""
    source = open_pairs(data, size=size, image_root=image_root, split=split, **source_options)
    transform, _ = _preprocessing(model, image_size, normalize, crop_ratio, str(data).startswith("synthetic"))
    skipped = Counter()
    readable = [batch for batch in encode_pairs(model, source, transform, skipped, device=_device(model, device),
                                                precision=precision, batch_size=batch_size, workers=workers)
                if batch["key"]]
    if not readable:
        raise ValueError(f"no readable pair in {source.name} (skipped: {dict(+skipped)})")
    offsets = torch.tensor([0] + [len(batch["key"]) for batch in readable]).cumsum(0)  # first image of each batch
    images = torch.cat([batch["image"] for batch in readable])  # N, D
    texts = torch.cat([batch["text"] for batch in readable])  # T, D
    text_to_image = torch.cat([batch["text_to_image"] + offset for batch, offset in zip(readable, offsets)])  # T
    result = {**retrieval_recall(images, texts, text_to_image, ks=(1, 5, 10)), "images": len(images),
              "captions": len(texts)}
    skipped = +skipped  # unary +: drop zero counts
    return {**result, "skipped": dict(skipped)} if skipped else result


def score(model, data, out_path, *, image_size=None, normalize="clip", device=None, precision="fp32", batch_size=256,
          workers=0, crop_ratio=None, **source_options):
    """Write `key,score` for every pair of `data` (read as train.py reads it, so the keys match
    data.read_scores / --keep-top) and return {"pairs", "scored", "skipped", "mean", "out"}.

    A pair's score is the MEAN cosine similarity of its image with each of its captions: training
    draws one caption at random, so this is the similarity it sees on average (with one caption,
    simply that caption's). Unreadable pairs get -inf, so they are ranked last, never kept first.
    """
    source = open_pairs(data, eval_split=False, **source_options)
    transform, _ = _preprocessing(model, image_size, normalize, crop_ratio, str(data).startswith("synthetic"))
    rows, bad, skipped = [], [], Counter()  # (source index, key, score)
    for batch in encode_pairs(model, source, transform, skipped, device=_device(model, device), precision=precision,
                              batch_size=batch_size, workers=workers):
        bad += [(index, key, float("-inf")) for index, key in batch["bad"]]
        if batch["key"]:
            per_caption = score_pairs(batch["image"][batch["text_to_image"]], batch["text"])  # T
            totals = torch.zeros(len(batch["key"])).index_add_(0, batch["text_to_image"], per_caption)  # B
            per_image = totals / torch.bincount(batch["text_to_image"], minlength=len(totals))  # B: mean over captions
            rows += zip(batch["index"], batch["key"], per_image.tolist())
    if not rows:
        raise ValueError(f"no readable pair in {source.name} (skipped: {dict(+skipped)})")
    scored = [value for *_, value in rows]
    rows = sorted(rows + bad)  # source order, as the file's reader lists keys
    write_scores(out_path, [key for _, key, _ in rows], [value for *_, value in rows])
    return {"pairs": len(rows), "scored": len(scored), "skipped": len(bad), "mean": sum(scored) / len(scored),
            "out": str(out_path)}
