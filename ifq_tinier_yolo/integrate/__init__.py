"""Integrated fixed-point conversion: trained hwgq checkpoint -> integer model -> `.ifq` file.

passes.py (the conversion as small named passes), convert.py (`convert` command; reads torch),
modelfile.py (`.ifq` save / load), verify.py (engine vs torch, bit for bit), report.py (sizes
and feature-map memory). Importing this package imports nothing heavy; convert and verify
need torch.
"""
