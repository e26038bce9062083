"""tinyclip: a minimal, readable PyTorch reference implementation of CLIP training under limited
compute, after "Scaling (Down) CLIP" (Li, Xie, Cubuk; arXiv 2404.08197, TMLR 2024).

The public API is a few names; everything else lives in its own module (see README.md):

    model = tinyclip.create_model("vit-s-16")               # or load_checkpoint / load_openai
    ids = tinyclip.tokenize(["a photo of a cat"])          # LongTensor[1, 77]
    image_features, text_features, logit_scale = model(images, ids)
"""

__version__ = "0.1.0"  # recorded in every eval result's provenance

from tinyclip.checkpoint import load_checkpoint
from tinyclip.flops import gflops_per_sample
from tinyclip.model import CLIP, CLIPConfig, build_model, create_model, list_models, load_openai
from tinyclip.tokenizer import Tokenizer, tokenize, train_bpe

__all__ = ["CLIP", "CLIPConfig", "Tokenizer", "build_model", "create_model", "gflops_per_sample", "list_models",
           "load_checkpoint", "load_openai", "tokenize", "train_bpe"]
