"""Video instance segmentation evaluation (YouTube-VIS and LV-VIS protocols).

``evaluate(gt, results, protocol="ytvis"|"lvvis") -> EvalReport``; see ``docs/evaluation.md``.
"""
from .dataset import GroundTruth, load_ground_truth, load_results, results_from_tracks
from .evaluator import evaluate
from .protocol import PROTOCOLS, Protocol, get_protocol
from .report import CategoryScore, EvalReport, VideoScore

__all__ = [
    "evaluate", "EvalReport", "CategoryScore", "VideoScore", "Protocol", "PROTOCOLS", "get_protocol",
    "GroundTruth", "load_ground_truth", "load_results", "results_from_tracks",
]
