"""clipvis: open-vocabulary video instance segmentation (CLIP-VIS) as a pre-annotation tool.

Importing this package loads no model and touches no GPU; heavy modules import lazily.
"""
__version__ = "0.1.0"

from .errors import ClipvisError, InputError, WeightsError  # noqa: F401
from .vocabulary import Vocabulary  # noqa: F401
