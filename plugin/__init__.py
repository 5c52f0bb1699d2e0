"""clipvis FiftyOne plugin: registers the operators (their logic lives in the sibling modules)."""
from .operators import EvaluateVideoInstances, FindNovelCategories, LearnFromCorrections, SegmentVideoInstances


def register(p):
    p.register(SegmentVideoInstances)
    p.register(FindNovelCategories)
    p.register(EvaluateVideoInstances)
    p.register(LearnFromCorrections)
