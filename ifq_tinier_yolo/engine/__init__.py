"""The integer-only runtime: numpy (+ opencv for resizing) only, never torch."""
