"""IFQ-Tinier-YOLO: an integer-only face detector.

    from ifq_tinier_yolo import Detector
    faces = Detector.load().detect(bgr_image)   # list of Face(x, y, w, h, score)

Importing the package is light: `Detector` and `Face` are loaded on first use, and the
integer backend never imports torch.
"""
__version__ = '0.1.0'
__all__ = ['Detector', 'Face']


def __getattr__(name: str):
    if name in __all__:
        from .apps import detector
        return getattr(detector, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
