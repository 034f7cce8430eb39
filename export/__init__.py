"""Exporters: ONNX and TorchScript, every file verified against PyTorch (installed as ``alphanet_zoo.export``)."""
