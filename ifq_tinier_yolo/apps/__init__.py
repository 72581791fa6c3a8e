"""User-facing applications: the Detector API, `detect`, `webcam` and the benchmark writers."""
