"""Training data: sources -> ``SampleRecord``s (cheap, picklable) -> ``decode`` -> ``Sample``.

``open_source(spec, images_dir)`` reads COCO / YouTube-VIS / Label Studio export JSON,
``fiftyone:DATASET[:FIELD][@VIEW]`` and ``labelstudio:PROJECT_ID``; ``TrainDataset`` decodes and
augments lazily in data-loader workers.
"""
from .dataset import TrainDataset
from .decode import decode, select_frames
from .sample import InstanceRecord, Sample, SampleRecord
from .sources import open_source

__all__ = ["InstanceRecord", "Sample", "SampleRecord", "TrainDataset", "decode", "open_source", "select_frames"]
