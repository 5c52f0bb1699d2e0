"""label-studio-ml, imported without its global side effect.

Importing ``label_studio_ml.model`` calls ``multiprocessing.set_start_method('spawn')`` for the
whole process; we restore whatever was set before, so importing the backend (tests, CLI) does
not change how other code in the process starts subprocesses.
"""
import multiprocessing

_before = multiprocessing.get_start_method(allow_none=True)
from label_studio_ml import api  # noqa: E402
from label_studio_ml.model import LabelStudioMLBase, LabelStudioMLManager, ModelWrapper  # noqa: E402

if multiprocessing.get_start_method(allow_none=True) != _before:
    multiprocessing.set_start_method(_before, force=True)

__all__ = ["api", "LabelStudioMLBase", "LabelStudioMLManager", "ModelWrapper"]
