"""tinyclip: a minimal, readable PyTorch reference implementation of CLIP training under limited
compute, after "Scaling (Down) CLIP" (Li, Xie, Cubuk; arXiv 2404.08197, TMLR 2024).

The public API is a few names; everything else lives in its own module (see README.md).
"""
