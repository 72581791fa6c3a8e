"""Benchmark protocols on files and boxes (FDDB, WIDER FACE) and their plots; no model code."""
