"""Exporters: VideoTracks -> YTVIS results JSON (``ytvis``), overlay video (``overlay``).

Submodules are imported on use; importing this package loads nothing heavy.
"""
