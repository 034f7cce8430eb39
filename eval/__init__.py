"""Evaluation harness: ImageNet top-1/top-5, FLOPs, the paper's table (installed as ``alphanet_zoo.eval``)."""
