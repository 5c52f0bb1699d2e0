"""Label Studio ML backend: video track and image mask pre-annotations from a project's own labels.

Modules: ``strategies`` (one class per control tag), ``brush`` (Label Studio brush RLE),
``urls`` (one reading of a media URL), ``media`` (guarded media fetching), ``runner`` (inference
jobs + result store), ``push`` (Label Studio API client), ``model`` (one project's config and
predictions), ``projects`` (per-project pinned host), ``app`` (the Flask routes), ``serve`` (gunicorn).
Nothing is loaded at import time.
"""
