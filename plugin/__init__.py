"""clipvis FiftyOne plugin: registers the operators and the runs panel (their logic lives in the sibling modules)."""
from .operators import EvaluateVideoInstances, FindNovelCategories, LearnFromCorrections, SegmentVideoInstances
from .panel import ClipvisRunsPanel


def register(p):
    p.register(SegmentVideoInstances)
    p.register(FindNovelCategories)
    p.register(EvaluateVideoInstances)
    p.register(LearnFromCorrections)
    p.register(ClipvisRunsPanel)
