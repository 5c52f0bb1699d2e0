"""Label Studio ML backend: video track and image mask pre-annotations from a project's own labels.

Modules: ``strategies`` (one class per control tag), ``brush`` (Label Studio brush RLE),
``media`` (guarded media fetching), ``runner`` (inference jobs + result store), ``push``
(Label Studio API client), ``model`` (the ``LabelStudioMLBase`` subclass), ``serve`` (WSGI app).
Nothing is loaded at import time.
"""
