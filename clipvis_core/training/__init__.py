"""Training of CLIP-VIS's class-agnostic mask generator (the CLIP backbone stays frozen).

Stages: ``data/`` (sources -> records -> samples), ``augment``, ``targets`` (samples -> batch),
``step`` (frozen trunk + head forward), ``matcher`` + ``criterion`` (upstream's losses, every random
draw through ``sampling.PointSampler``), ``optim`` (AdamW, clipping, schedule), ``loop``.
"""
