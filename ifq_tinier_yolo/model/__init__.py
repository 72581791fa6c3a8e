"""The quantization network in PyTorch: quantizers, Tinier-YOLO built from netdef, region loss."""
