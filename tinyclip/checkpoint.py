"""Checkpoints: one self-contained file per save, written atomically, read safely.

A checkpoint is a dict
    {"model", "config", "optimizer", "scaler", "step", "samples_seen", "args", "rng", "data_state"}:
"config" is the model's CLIPConfig as a plain dict (SLIP's head included), so `load_checkpoint(path)`
rebuilds the model from the file alone; "args" are the run's settings and "data_state" what its data
selected, which a resume must match (train.py); "rng" holds every rank's random state (each rank's stream
seeded apart: seed_rank_stream). A crash mid-write never leaves a half-written file under a checkpoint's
name (atomic_write); `torch.load(weights_only=True)` cannot run code.
"""

import contextlib
import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from tinyclip.model import build_model

_STEP_FILE = re.compile(r"step_(\d+)\.pt$")
TEMP_MARK = ".tmp"  # temporary files are .NAME.tmpPID


# -----------------------------------------------------------------------------
# writing


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open `path` for writing so that readers see the old file or the whole new one, never a part: the
    data goes to a temporary file in the same folder (`.NAME.tmpPID`), is flushed to disk, renamed into
    place, and the folder is synced so the rename itself survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def remove_stale_temp_files(out_dir) -> None:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in a run folder."""
    for folder in (Path(out_dir), Path(out_dir) / "checkpoints"):
        for p in folder.glob(f".*{TEMP_MARK}*"):
            if p.is_file():
                p.unlink(missing_ok=True)


def save_atomic(obj, path) -> None:
    """torch.save to `path` through atomic_write."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def step_checkpoint_path(out_dir, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}.pt"


def prune_checkpoints(out_dir, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (keep <= 0 keeps them all)."""
    if keep <= 0:
        return
    for path in list_step_checkpoints(out_dir)[:-keep]:
        path.unlink(missing_ok=True)


# -----------------------------------------------------------------------------
# the random state a checkpoint carries: each rank's, seeded, saved and restored


def rng_state() -> dict:
    """Every RNG a training step draws from (FLIP masks, dropout, SLIP's head init...)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_rank_stream(seed: int, rank: int, step: int) -> None:
    """Seed this rank's random stream (torch's, for FLIP's masks, and Python's) from (seed, rank, step),
    mixed by numpy's SeedSequence: a plain seed + rank would make rank 0 replay the very numbers the
    model's initialisation drew, and the masks would follow the initial weights."""
    value = int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0])
    torch.manual_seed(value)
    random.seed(value)


# -----------------------------------------------------------------------------
# reading


def read_checkpoint(path) -> dict:
    """torch.load with weights_only=True; a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a pickle with code in it, not a torch file at all...
        raise ValueError(f"{path} is not a readable tinyclip checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not a tinyclip checkpoint (no 'model' and 'config' entries)")
    return ckpt


def list_step_checkpoints(out_dir) -> list:
    """The step checkpoints of a run, oldest first."""
    folder = Path(out_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _STEP_FILE.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_valid_checkpoint(out_dir):
    """(path, checkpoint) of the newest checkpoint in out_dir that reads cleanly, else (None, None).

    The final `ckpt.pt` and the step checkpoints compete on their step; a corrupt or half-written
    file is skipped with a warning in favour of the one before it."""
    final = Path(out_dir) / "ckpt.pt"
    best = (None, None)
    for path in ([final] if final.is_file() else []) + list_step_checkpoints(out_dir)[::-1]:
        try:
            ckpt = read_checkpoint(path)
        except ValueError as e:
            warnings.warn(f"skipping unreadable checkpoint: {e}")
            continue
        if best[1] is None or ckpt["step"] > best[1]["step"]:
            best = (path, ckpt)
        if path != final:  # step files are in step order: the first readable one is the newest
            break
    return best


def load_checkpoint(path, device="cpu"):
    """Rebuild a trained model from a checkpoint file alone: returns (model in eval mode, ckpt)."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
