"""Linear-probe and few-shot classifiers on frozen features, for "Scaling (Down) CLIP" (Li, Xie,
Cubuk 2024), which reports ImageNet linear probing and 5-/10-shot accuracy of a frozen image tower.

The probe is L2-regularised multinomial logistic regression, as in CLIP's linear-probe evaluation
(Radford et al. 2021, appendix A.3, which used scikit-learn's L-BFGS logistic regression), written
in torch so it runs on the GPU next to the features:
- features are standardised with the mean and standard deviation of the split being fitted, so one
  weight-decay grid suits every architecture's feature scale and L-BFGS is well conditioned;
- a zero-initialised linear layer (weights + bias) minimises mean cross-entropy + (wd / 2) * ||W||^2
  (no decay on the bias) with full-batch L-BFGS and a strong-Wolfe line search;
- the weight decay wd is chosen from a small log-spaced grid by top-1 accuracy on a stratified
  held-out 20% of the training split (ties go to the larger decay), then the probe is refitted on
  the whole training split with that decay.
Everything is deterministic: the split comes from a seeded generator and the fit is full-batch.
Few-shot evaluation samples exactly k training examples per class per seed and runs the same probe.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyclip.evaluation import topk_accuracy

WEIGHT_DECAYS = tuple(10.0 ** e for e in range(-6, 1))  # 1e-6 ... 1


# --------------------------------------------------------------------------------------------
# The probe

class LinearProbe(nn.Module):
    """Standardise features with stored statistics, then a linear layer: [N, D] -> logits [N, C]."""

    def __init__(self, num_features, num_classes):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.linear = nn.Linear(num_features, num_classes)
        nn.init.zeros_(self.linear.weight)  # zero init: the paper's choice, and it makes the fit deterministic
        nn.init.zeros_(self.linear.bias)
        self.weight_decay = None  # set by train_linear_probe

    def fit_standardization(self, features):
        self.mean = features.mean(dim=0)
        std = features.std(dim=0, correction=0)
        self.std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant features stay at 0

    def forward(self, features):
        return self.linear((features.float() - self.mean) / self.std)  # N, C


def _fit(features, labels, num_classes, weight_decay, max_iter):
    """Fit a fresh zero-initialised probe with full-batch L-BFGS; returns the probe."""
    probe = LinearProbe(features.shape[1], num_classes).to(features.device)
    probe.fit_standardization(features)
    x = (features - probe.mean) / probe.std  # N, D: standardised once, not in every closure call
    optimizer = torch.optim.LBFGS(probe.linear.parameters(), lr=1.0, max_iter=max_iter, history_size=10,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe.linear(x), labels) + 0.5 * weight_decay * probe.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)  # one step runs up to max_iter L-BFGS iterations
    probe.weight_decay = float(weight_decay)
    return probe.requires_grad_(False)


def _stratified_holdout(labels, fraction, seed):
    """Split indices into (fit, held_out), holding out floor(fraction * n_c) of each class c."""
    generator = torch.Generator().manual_seed(seed)
    fit, held_out = [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels.cpu() == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = int(fraction * len(members) + 1e-9)
        held_out.append(members[:n_held])
        fit.append(members[n_held:])
    return torch.cat(fit).sort().values, torch.cat(held_out).sort().values


def train_linear_probe(train_feats, train_labels, num_classes, weight_decays=WEIGHT_DECAYS, weight_decay=None,
                       holdout_fraction=0.2, max_iter=1000, seed=0, device=None):
    """Fit a LinearProbe on features [N, D] and labels [N]; its `.weight_decay` is the decay chosen.

    With weight_decay=None the decay is chosen from `weight_decays` on a stratified held-out
    `holdout_fraction` of the training split, then the probe is refitted on all of it; pass a
    number to skip the search. `seed` fixes the held-out split. Runs on `device` (default: the
    features' device), full batch: N x max(D, C) floats must fit there.
    """
    device = torch.device(device) if device is not None else train_feats.device
    features = train_feats.to(device).float()
    labels = torch.as_tensor(train_labels, device=device).long()
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"expected features [N, D] and labels [N], got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be non-empty and lie in [0, {num_classes})")

    if weight_decay is None:
        if not weight_decays:
            raise ValueError("weight_decays is empty: give a grid or a fixed weight_decay")
        fit, held_out = _stratified_holdout(labels, holdout_fraction, seed)
        if len(held_out) == 0:
            raise ValueError(f"too few examples per class to hold out {holdout_fraction:.0%} for choosing the "
                             "weight decay; pass weight_decay= explicitly")
        best_accuracy = -1.0
        for candidate in sorted(weight_decays):
            probe = _fit(features[fit], labels[fit], num_classes, candidate, max_iter)
            accuracy = (probe(features[held_out]).argmax(dim=1) == labels[held_out]).float().mean().item()
            if accuracy >= best_accuracy:  # >=: ties go to the larger (simpler) decay
                best_accuracy, weight_decay = accuracy, candidate
    return _fit(features, labels, num_classes, weight_decay, max_iter)


def linear_probe(train_feats, train_labels, test_feats, test_labels, num_classes=None, **probe_kwargs):
    """Train a probe on the train split, report {"top1": test accuracy, "weight_decay": chosen decay}."""
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = train_linear_probe(train_feats, train_labels, num_classes, **probe_kwargs)
    device = probe.mean.device
    with torch.no_grad():
        logits = probe(test_feats.to(device))  # N_test, C
    top1 = topk_accuracy(logits, test_labels.to(device), ks=(1,))["top1"]
    return {"top1": top1, "weight_decay": probe.weight_decay}


# --------------------------------------------------------------------------------------------
# Few-shot

def sample_fewshot(labels, k, seed, num_classes=None):
    """Indices of exactly k examples of every class, chosen by a generator seeded with `seed`.

    Classes are 0..num_classes-1 when num_classes is given, else the labels present. Indices come
    grouped by class in class order. Raises ValueError naming a class with fewer than k examples.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    classes = range(num_classes) if num_classes is not None else torch.unique(labels).tolist()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        if len(members) < k:
            raise ValueError(f"class {c} has only {len(members)} examples, fewer than k={k}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen)


def fewshot_eval(train_feats, train_labels, test_feats, test_labels, ks=(5, 10), seeds=(0, 1, 2), num_classes=None,
                 **probe_kwargs):
    """k-shot linear-probe accuracy over several seeds: {k: {"mean", "std", "per_seed", "weight_decays"}}.

    For each k and seed, `sample_fewshot` draws k training examples per class and `linear_probe`
    (same decay search, on the k-shot set itself) is evaluated on the full test split. "std" is the
    sample standard deviation over seeds (0 for a single seed).
    """
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    results = {}
    for k in ks:
        runs = []
        for seed in seeds:
            index = sample_fewshot(train_labels, k, seed, num_classes)
            runs.append(linear_probe(train_feats[index.to(train_feats.device)], train_labels[index], test_feats,
                                     test_labels, num_classes, seed=seed, **probe_kwargs))
        top1 = torch.tensor([run["top1"] for run in runs], dtype=torch.float64)
        results[k] = {"mean": top1.mean().item(), "std": top1.std().item() if len(runs) > 1 else 0.0,
                      "per_seed": top1.tolist(), "weight_decays": [run["weight_decay"] for run in runs]}
    return results
