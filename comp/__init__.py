"""comp: from an image-classification competition folder to a scored submission."""

import os

# albumentations 2.0.8 checks PyPI for updates on import unless told not to.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
