"""Evaluation math for CLIP models: zero-shot classification, top-k accuracy, image-text retrieval,
pair scoring for data filtering, robustness-benchmark class subsets, and batched feature extraction.

The protocols are those used by "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024), which follow CLIP
(Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"):
- zero-shot: a class's classifier weight is the normalised mean of the normalised text embeddings
  of its name in every prompt template (CLIP's 80 ImageNet templates, tinyclip/assets/);
- retrieval: MSCOCO image->text and text->image Recall@K, several captions per image;
- robustness: ImageNet-A/-R use 200-class subsets of the 1000 ImageNet logits, ObjectNet maps its
  classes onto sets of ImageNet classes, and the paper reports the average over the variants.
The linear probe and few-shot classifiers live in tinyclip/probe.py.

Everything here is a pure function of tensors except `zeroshot_classifier` and `extract_features`,
which call `model.encode_text` / `model.encode_image`. Accuracies and recalls are fractions in [0, 1].

Ties are scored pessimistically everywhere: a correct item's rank is the number of wrong items
whose score is >= its own, and it counts as within the top k when that rank is < k. So a wrong
class or caption tied with the right one always counts against, whatever order a sort would give.
"""
import contextlib
import csv
import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

ASSETS = Path(__file__).parent / "assets"
CLASS_SUBSETS = {"imagenet-a": ASSETS / "imagenet_a_indices.txt", "imagenet-r": ASSETS / "imagenet_r_indices.txt"}


# --------------------------------------------------------------------------------------------
# Ranking with pessimistic ties (shared by classification and retrieval)

def _pessimistic_rank(scores, positive):
    """Rank of the best positive in each row: the number of negatives scoring >= it.

    scores: [Q, M] float; positive: [Q, M] bool with at least one True per row. Returns [Q] long.
    A row whose best positive is ranked r is found within the top k exactly when r < k.
    """
    best_positive = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)  # Q, 1
    return ((scores >= best_positive) & ~positive).sum(dim=1)  # Q


def _hits_at(ranks, ks, prefix):
    return {f"{prefix}{k}": (ranks < k).sum().item() / len(ranks) for k in ks}  # exact count / total


# --------------------------------------------------------------------------------------------
# Classification accuracy

def topk_accuracy(logits, labels, ks=(1, 5), chunk_size=4096):
    """Top-k accuracy of logits [N, C] against integer labels [N]: {"top1": ..., "top5": ...}.

    A sample counts for top-k when fewer than k *other* classes have a logit >= the true class's
    logit (pessimistic ties; see the module docstring). With no ties this equals torch.topk.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("topk_accuracy needs at least one sample")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) for {logits.shape[1]} classes")
    ranks = []
    for start in range(0, len(labels), chunk_size):  # chunked: ImageNet is 50k x 1000
        chunk, y = logits[start:start + chunk_size], labels[start:start + chunk_size]
        positive = F.one_hot(y.long(), logits.shape[1]).bool()  # n, C
        ranks.append(_pessimistic_rank(chunk.float(), positive))
    return _hits_at(torch.cat(ranks), ks, "top")


# --------------------------------------------------------------------------------------------
# Zero-shot classification (Radford et al. 2021, section 3.1.4 prompt ensembling)

def zeroshot_classifier(model, class_names, templates, tokenize_fn=None, context_length=None, device=None,
                        batch_size=256):
    """Zero-shot classifier weights [D, C] for `image_features_unit @ weights`.

    Column c is the L2-normalised mean over templates of the L2-normalised text embeddings of
    `template.format(class_names[c])`, computed with `model.encode_text(ids)`. `tokenize_fn(texts,
    context_length=L) -> LongTensor[N, L]` defaults to tinyclip.tokenizer.tokenize; `context_length`
    defaults to model.config.context_length (or 77).
    """
    if not class_names or not templates:
        raise ValueError("zeroshot_classifier needs at least one class name and one template")
    for template in templates:
        if "{}" not in template:
            raise ValueError(f"template {template!r} has no '{{}}' placeholder for the class name")
    if tokenize_fn is None:
        from tinyclip.tokenizer import tokenize as tokenize_fn  # imported late: only needed here
    if context_length is None:
        context_length = getattr(getattr(model, "config", None), "context_length", 77)
    device = torch.device(device) if device is not None else _model_device(model)

    prompts = [template.format(name) for name in class_names for template in templates]  # class-major
    was_training = model.training
    model.eval()
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            ids = tokenize_fn(prompts[start:start + batch_size], context_length=context_length).to(device)
            embeddings.append(F.normalize(model.encode_text(ids).float(), dim=-1))  # b, D
    model.train(was_training)
    per_template = torch.cat(embeddings).view(len(class_names), len(templates), -1)  # C, T, D
    return F.normalize(per_template.mean(dim=1), dim=-1).t().contiguous()  # D, C


def zeroshot_logits(image_features, classifier):
    """Cosine-similarity logits [N, C] of image features [N, D] against classifier weights [D, C]."""
    return F.normalize(image_features.float(), dim=-1) @ classifier.to(image_features.device).float()


def _model_device(model):
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Image-text retrieval (MSCOCO 5k test images x 25k captions)

def retrieval_recall(image_features, text_features, text_to_image, ks=(1, 5, 10), chunk_size=1024, normalize=True):
    """Image->text and text->image Recall@K: {"image_to_text_R@1": ..., "text_to_image_R@1": ...}.

    image_features [N, D], text_features [T, D], text_to_image [T]: the image each caption
    describes (an image may have several captions). Image->text: an image is found at K when ANY
    of its captions ranks within the top K captions. Text->image: a caption is found when its
    image ranks within the top K images. Ties with wrong items count against (pessimistic).
    Similarities are cosines (features L2-normalised here unless normalize=False); queries are
    processed `chunk_size` at a time so memory stays at chunk_size x max(N, T) scores.
    """
    n_images, n_texts = len(image_features), len(text_features)
    if n_images == 0 or n_texts == 0:
        raise ValueError(f"retrieval needs images and captions, got {n_images} and {n_texts}")
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long, device=text_features.device)
    if text_to_image.shape != (n_texts,):
        raise ValueError(f"text_to_image must hold one image index per caption ({n_texts}), "
                         f"got shape {tuple(text_to_image.shape)}")
    if text_to_image.min() < 0 or text_to_image.max() >= n_images:
        raise ValueError(f"text_to_image holds indices outside [0, {n_images})")
    captions_per_image = torch.bincount(text_to_image, minlength=n_images)
    if (captions_per_image == 0).any():
        missing = torch.nonzero(captions_per_image == 0).flatten()[:5].tolist()
        raise ValueError(f"images {missing} have no captions; every image needs at least one")
    images, texts = image_features.float(), text_features.float().to(image_features.device)
    if normalize:
        images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    text_to_image = text_to_image.to(images.device)

    image_ranks, text_ranks = [], []
    for start in range(0, n_images, chunk_size):
        scores = images[start:start + chunk_size] @ texts.t()  # n, T
        image_ids = torch.arange(start, start + len(scores), device=images.device)
        image_ranks.append(_pessimistic_rank(scores, text_to_image[None, :] == image_ids[:, None]))
    for start in range(0, n_texts, chunk_size):
        scores = texts[start:start + chunk_size] @ images.t()  # t, N
        positive = F.one_hot(text_to_image[start:start + chunk_size], n_images).bool()  # t, N
        text_ranks.append(_pessimistic_rank(scores, positive))
    return {**_hits_at(torch.cat(image_ranks), ks, "image_to_text_R@"),
            **_hits_at(torch.cat(text_ranks), ks, "text_to_image_R@")}


# --------------------------------------------------------------------------------------------
# Pair scoring for data filtering (the paper's "Quality" study ranks pairs by image-text similarity)

def score_pairs(image_features, text_features):
    """Cosine similarity of each matched pair: row i of image_features with row i of text_features -> [N]."""
    if image_features.shape != text_features.shape:
        raise ValueError(f"matched pairs need equal shapes, got {tuple(image_features.shape)} "
                         f"and {tuple(text_features.shape)}")
    return F.cosine_similarity(image_features.float(), text_features.float(), dim=-1)


def write_scores(path, keys, scores):
    """Write a `key,score` CSV (with header) that the data pipeline's --score-file reads; atomic."""
    scores = torch.as_tensor(scores).flatten().tolist()
    if len(keys) != len(scores):
        raise ValueError(f"got {len(keys)} keys but {len(scores)} scores")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "score"])
        writer.writerows((key, repr(float(score))) for key, score in zip(keys, scores))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Robustness benchmarks: class subsets (ImageNet-A/-R), class mappings (ObjectNet), averages

def load_class_subset(name_or_path, wnids=None):
    """ImageNet class indices of a class subset: "imagenet-a", "imagenet-r" or a file path.

    A file holds one entry per line (blank lines and `#` comments ignored): either an integer class
    index, or a WordNet id such as n01443537, looked up in `wnids` (the 1000 ImageNet wnids in class
    order, e.g. the sorted folder names of an ImageNet ImageFolder). The dataset's label j must be
    the subset's j-th class; for ImageFolder copies of ImageNet-A/-R (sorted wnid folders) that holds
    for the shipped ascending lists, taken from the datasets' authors (hendrycks on GitHub).
    """
    path = CLASS_SUBSETS.get(str(name_or_path).lower(), Path(name_or_path))
    if not path.is_file():
        raise FileNotFoundError(f"class subset {name_or_path!r}: no such file (built in: {sorted(CLASS_SUBSETS)})")
    entries = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    entries = [entry for entry in entries if entry]
    if not entries:
        raise ValueError(f"class subset file {path} lists no classes")
    wnid_index = {wnid: i for i, wnid in enumerate(wnids or [])}
    indices = []
    for entry in entries:
        if entry.isdigit():
            indices.append(int(entry))
        elif entry in wnid_index:
            indices.append(wnid_index[entry])
        else:
            hint = "" if wnids else " (pass wnids= to look up WordNet ids)"
            raise ValueError(f"class subset {path}: {entry!r} is neither a class index nor a known wnid{hint}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"class subset {path} lists a class twice")
    return indices


def subset_logits(logits, class_indices):
    """Keep only the columns of `class_indices` (logits [N, 1000] -> [N, S]); column j is label j.

    This is the ImageNet-A/-R protocol: the model still scores all 1000 classes' weights, but the
    argmax is taken over the dataset's 200 classes only, with labels numbered in subset order.
    """
    index = torch.as_tensor(class_indices, dtype=torch.long, device=logits.device)
    if index.numel() and (index.min() < 0 or index.max() >= logits.shape[1]):
        raise ValueError(f"class indices must lie in [0, {logits.shape[1]})")
    return logits.index_select(1, index)


def mapped_accuracy(logits, labels, class_to_indices, restrict=True):
    """Top-1 accuracy when each dataset class maps to a set of model classes (ObjectNet -> ImageNet).

    logits [N, C_model], labels [N] dataset classes, class_to_indices[label] = model class indices
    that count as correct. With restrict=True the argmax only considers model classes that appear in
    some mapping (ObjectNet's usual protocol); classes outside every mapping can never be predicted.
    """
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"expected labels [N] for logits {tuple(logits.shape)}, got {tuple(labels.shape)}")
    n_model = logits.shape[1]
    correct_set = torch.zeros(len(class_to_indices), n_model, dtype=torch.bool, device=logits.device)  # C_data, C_model
    for c, indices in enumerate(class_to_indices):
        if len(indices) == 0:
            raise ValueError(f"dataset class {c} maps to no model class")
        correct_set[c, torch.as_tensor(list(indices), dtype=torch.long)] = True
    scores = logits.float()
    if restrict:
        scores = scores.masked_fill(~correct_set.any(dim=0), float("-inf"))
    predicted = scores.argmax(dim=1)  # N
    return correct_set[labels.long(), predicted].float().mean().item()


def average_over_datasets(results):
    """{name: top1} -> the same dict plus "average", the unweighted mean the paper reports."""
    if not results:
        raise ValueError("average_over_datasets needs at least one result")
    if "average" in results:
        raise ValueError("a dataset may not be named 'average'")
    return {**results, "average": sum(results.values()) / len(results)}


# --------------------------------------------------------------------------------------------
# Feature extraction with an optional on-disk cache

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def feature_fingerprint(checkpoint_path, dataset, transform):
    """A short hash naming a feature cache: checkpoint (path, size, mtime), dataset and transform.

    `dataset` and `transform` are strings the caller chooses (e.g. a path and a preset name with
    its image size); re-training the checkpoint in place changes its mtime and so the fingerprint.
    """
    path = Path(checkpoint_path).resolve()
    stat = f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.is_file() else "missing"
    text = "\n".join([str(path), stat, str(dataset), str(transform)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _split_batch(batch, kinds):
    """Inputs per kind plus optional labels/keys from a loader batch: a dict, (inputs, labels) or a tensor."""
    if isinstance(batch, dict):
        missing = [kind for kind in kinds if kind not in batch]
        if missing:
            raise ValueError(f"loader batches have keys {sorted(batch)}, missing {missing}")
        return {kind: batch[kind] for kind in kinds}, batch.get("label"), batch.get("key")
    if isinstance(batch, (tuple, list)):
        inputs, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        inputs, labels = batch, None
    if len(kinds) != 1:
        raise ValueError("kind='pair' needs a loader whose batches are dicts with 'image' and 'text'")
    return {kinds[0]: inputs}, labels, None


def extract_features(model, loader, kind="image", device=None, precision="fp32", cache_dir=None, fingerprint=None,
                     progress=True):
    """Encode every batch of `loader` and return {"image"|"text": [N, D] float32 on CPU, ...}.

    kind: "image" (model.encode_image), "text" (model.encode_text) or "pair" (both, from dict
    batches with "image" and "text"). Batches are dicts (optional "label" and "key" entries),
    `(inputs, labels)` tuples (ImageFolder style) or bare tensors; labels and keys, when present,
    come back as "labels" (LongTensor[N]) and "keys" (list of str). Features are the raw encoder
    outputs (not normalised). Runs under torch.no_grad in eval mode, under autocast for bf16/fp16.
    With cache_dir, the result is saved to cache_dir/<kind>-<fingerprint>.pt and reused by later
    calls with the same fingerprint (see feature_fingerprint); files load with weights_only=True.
    """
    kinds = {"image": ("image",), "text": ("text",), "pair": ("image", "text")}.get(kind)
    if kinds is None:
        raise ValueError(f"kind must be 'image', 'text' or 'pair', got {kind!r}")
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {precision!r}")
    cache_file = None
    if cache_dir is not None:
        if not fingerprint:
            raise ValueError("a feature cache needs a fingerprint (see feature_fingerprint)")
        cache_file = Path(cache_dir) / f"{kind}-{fingerprint}.pt"
        if cache_file.is_file():
            return torch.load(cache_file, map_location="cpu", weights_only=True)

    device = torch.device(device) if device is not None else _model_device(model)
    encoders = {"image": model.encode_image, "text": model.encode_text}
    dtype = AUTOCAST_DTYPES[precision]
    features = {kind_: [] for kind_ in kinds}
    labels, keys = [], []
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for batch in tqdm(loader, desc=f"{kind} features", disable=not progress):
            inputs, batch_labels, batch_keys = _split_batch(batch, kinds)
            for kind_, x in inputs.items():
                features[kind_].append(encoders[kind_](x.to(device)).float().cpu())  # B, D
            if batch_labels is not None:
                labels.append(torch.as_tensor(batch_labels).long().cpu())
            if batch_keys is not None:
                keys.extend(str(key) for key in batch_keys)
    model.train(was_training)

    result = {kind_: torch.cat(chunks) for kind_, chunks in features.items()}
    if labels:
        result["labels"] = torch.cat(labels)
    if keys:
        result["keys"] = keys
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + ".tmp")
        torch.save(result, tmp)
        os.replace(tmp, cache_file)  # atomic: a killed run never leaves a half-written cache
    return result
