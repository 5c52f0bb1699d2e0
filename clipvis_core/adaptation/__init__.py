"""Classifier adaptation: labelled instances -> per-class visual prototypes blended with the text classifier.

``open_examples(spec)`` -> ``fit_adapter(segmenter, examples)`` -> ``ClassifierAdapter.save(path)``;
``Segmenter.segment(..., adapter=path)`` applies it. See ``docs/adaptation.md``.
"""
from .adapter import ClassifierAdapter, load_adapter, model_identity, record_in_card
from .examples import Example, ExampleSet, Observation, open_examples
from .fit import AdaptOptions, extend_vocabulary, fit_adapter

__all__ = ["AdaptOptions", "ClassifierAdapter", "Example", "ExampleSet", "Observation", "extend_vocabulary",
           "fit_adapter", "load_adapter", "model_identity", "open_examples", "record_in_card"]
