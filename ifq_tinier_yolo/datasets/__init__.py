"""Dataset readers, augmentation and the PyTorch training set (WIDER FACE, FDDB)."""
