"""The streaming video API: frames in, instance tracks out.

Frames are decoded lazily and run through the network in windows; the temporal matcher keeps its
memory across windows; per-frame masks and class probabilities go to a disk store, so RAM does not
grow with the video. Results equal upstream's whole-video algorithm.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .cpu_memory import reuse_freed_memory
from .errors import InputError
from .instances import InstanceTrace, build_tracks
from .matching import MatchRecord, TemporalMatcher
from .precision import autocast, check_precision
from .prefetch import Prefetch
from .preprocess import geometry, prepare_frames
from .resume import ResumeDir, RunState, run_signature
from .scoring import VideoScores, frame_class_logits, select_instances
from .store import FrameStore, OutputGeometry
from .tracks import VideoInfo, VideoTracks
from .vocabulary import Vocabulary


@dataclass
class SegmentOptions:
    frame_stride: int = 1
    start_time: float | None = None  # seconds
    end_time: float | None = None
    max_frames: int | None = None
    min_size: int | None = None  # shorter side at test time; None = model config, 0 = no resize
    max_size: int | None = None
    window: int | None = None  # frames per network forward; None = 10 on CUDA (upstream), 1 on CPU
    detections: int | None = None  # instances kept per video; None = model config
    score_threshold: float = 0.0  # drop tracks scoring below this
    output_size: tuple[int, int] | None = None  # (h, w) of output masks; None = decoded frame size
    precision: str = "fp32"  # network forward: fp32, or bf16 / fp16 autocast (precision.py)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "SegmentOptions":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown segmentation options {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        if d.get("output_size") is not None:
            d["output_size"] = tuple(d["output_size"])
        return cls(**d)


@dataclass
class SegmentProgress:
    frames_done: int
    frames_total: int
    fps: float
    elapsed: float
    result: VideoTracks | None = None
    temp_bytes: int = 0  # frame store size on disk so far
    start_frame: int = 0  # frames restored from a checkpoint (a resumed run); fps counts this run's frames


@dataclass
class SegmentTrace:
    """Intermediates recorded when a trace is passed (parity tests, debugging)."""

    matches: list[MatchRecord] = field(default_factory=list)
    obj_logits: list[torch.Tensor] = field(default_factory=list)  # per frame [Q, 2], track order
    ious: list[torch.Tensor] = field(default_factory=list)
    cls_logits: list[torch.Tensor] = field(default_factory=list)  # per frame [Q, C]
    video_obj_logits: torch.Tensor | None = None
    final_scores: torch.Tensor | None = None  # [Q, C]
    selection: object | None = None
    instances: InstanceTrace = field(default_factory=InstanceTrace)


def _frames_source(source, opts: SegmentOptions):
    """(VideoInfo, frames(start) -> iterator of RGB frames from position ``start``, closer) for a path
    or an in-memory [T, H, W, 3] array."""
    if isinstance(source, np.ndarray) or (isinstance(source, (list, tuple)) and source and isinstance(source[0], np.ndarray)):
        frames = np.asarray(source)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError("in-memory video must be a uint8 array [T, H, W, 3] (RGB)")
        idx = list(range(0, len(frames), max(opts.frame_stride, 1)))[: opts.max_frames or None]
        info = VideoInfo("<array>", frames.shape[2], frames.shape[1], 0.0, len(idx), idx)
        return info, lambda start=0: (frames[i] for i in idx[start:]), lambda: None
    from .video import open_video

    reader = open_video(source, frame_stride=opts.frame_stride, start_time=opts.start_time,
                        end_time=opts.end_time, max_frames=opts.max_frames)
    ahead: list[Prefetch] = []

    def frames(start: int = 0):
        ahead.append(Prefetch(f for _, f in reader.iter_from(start)))  # decoded in a thread while the network runs
        return ahead[-1]

    def close():
        for p in ahead:
            p.close()  # the thread stops reading before the reader closes
        reader.close()
    return reader.info, frames, close


class Segmenter:
    def __init__(self, model, resolved, device: torch.device, autocast: bool = False):
        from .modeling.clip_adapter import build_tokenizer

        self.model, self.resolved, self.device = model, resolved, device
        self.cfg = resolved.config
        self.autocast = autocast and device.type == "cuda"
        self.tokenizer = build_tokenizer(self.cfg.clip_model_name, self.model.backbone.context_length)
        self._text_cache: dict[str, object] = {}
        self._lock = threading.Lock()  # one video at a time per model (hosts may call from threads)

    @classmethod
    def load(cls, checkpoint: str, device: str = "auto", autocast: bool = False) -> "Segmenter":
        from .weights import load_model, resolve_checkpoint

        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
        resolved = resolve_checkpoint(checkpoint)
        return cls(load_model(resolved, dev), resolved, dev, autocast)

    @property
    def name(self) -> str:
        return self.resolved.name

    def model_version(self, vocabulary, adapter=None) -> str:
        base = f"{self.name}@{as_vocabulary(vocabulary).digest()}"
        return base if adapter is None else f"{base}+{self.adapter(adapter).digest()}"

    def adapter(self, adapter):
        """A classifier adapter (path or loaded), checked against this model's weights."""
        from .adaptation import load_adapter

        loaded = load_adapter(adapter)
        loaded.check(self.model, self.name)
        return loaded

    def text_classifier(self, vocab: Vocabulary):
        from .text import build_text_classifier
        from .weights import cache_dir

        key = vocab.digest()
        if key not in self._text_cache:
            self._text_cache.clear()  # keep one vocabulary's classifier in memory
            self._text_cache[key] = build_text_classifier(self.model.backbone, self.tokenizer, vocab, cache_dir())
        return self._text_cache[key]

    def segment(self, source, vocabulary, options: SegmentOptions | None = None,
                progress: Callable[[SegmentProgress], None] | None = None, trace: SegmentTrace | None = None,
                adapter=None, resume: ResumeDir | None = None) -> VideoTracks:
        result = None
        for p in self.iter_segment(source, vocabulary, options, trace, adapter, resume):
            if progress is not None:
                progress(p)
            result = p.result or result
        return result

    def iter_segment(self, source, vocabulary, options: SegmentOptions | None = None,
                     trace: SegmentTrace | None = None, adapter=None,
                     resume: ResumeDir | None = None) -> Iterator[SegmentProgress]:
        """``adapter``: a classifier adapter file (``clipvis adapt``) blended into the text classifier;
        with no vocabulary given, the adapter's vocabulary is used. ``resume``: make the run resumable
        (``resume.py``): it continues from that directory's checkpoint when the inputs match."""
        opts = options or SegmentOptions()
        adapter = self.adapter(adapter) if adapter is not None else None
        vocab = as_vocabulary(vocabulary) if vocabulary or adapter is None else adapter.vocab
        if resume is not None and trace is not None:
            raise ValueError("a traced run cannot be checkpointed (the trace lives in memory)")
        with self._lock:
            yield from self._run(source, vocab, opts, trace, adapter, resume)

    def _run(self, source, vocab: Vocabulary, opts: SegmentOptions, trace: SegmentTrace | None, adapter=None,
             resume: ResumeDir | None = None):
        cfg, inf = self.cfg, self.cfg.inference
        check_precision(opts.precision, self.device.type)  # before any decoding
        info, open_frames, close = _frames_source(source, opts)
        try:
            if info.num_frames == 0:
                raise InputError(f"{info.source}: no frames to process (check the time range / stride)")
            text = self.text_classifier(vocab)
            if adapter is not None:
                text = adapter.apply(text, vocab)
            min_size = inf.min_size if opts.min_size is None else opts.min_size
            geom = geometry(info.height, info.width, min_size, opts.max_size or inf.max_size, cfg.size_divisibility)
            out_hw = tuple(opts.output_size) if opts.output_size else (info.height, info.width)
            q, c = cfg.decoder.num_queries, len(vocab)
            h4, w4 = geom.padded_hw[0] // 4, geom.padded_hw[1] // 4
            window = opts.window or self.default_window()
            matcher = TemporalMatcher(inf.memory_len, inf.top_k)
            scores = VideoScores()
            mean, std = self.model.pixel_mean, self.model.pixel_std
            # A trace records output-resolution logits, so it keeps the raw mask logits as well.
            shapes = {"masks": (q, h4, w4), "probs": (q, c), "obj": (q, 2)}
            out_geom = OutputGeometry(geom.padded_hw, geom.image_hw, out_hw)
            if resume is None:
                store, state = FrameStore(shapes, out_geom, keep_raw=trace is not None), None
            else:
                sig = run_signature(model=self.model_version(vocab, adapter), options=opts.to_dict(), window=window,
                                    device=self.device.type, shapes=shapes, geometry=out_geom, video=[
                                        info.width, info.height, info.num_frames, info.frame_indices])
                store, state = resume.open_store(shapes, out_geom, resume.begin(sig))
            with store, reuse_freed_memory(self.device.type == "cpu"):
                start = done = self._restore(state, matcher, scores)
                t0 = time.perf_counter()
                for batch in _windows(open_frames(start), window):
                    x = prepare_frames(batch, geom, mean, std, self.device)
                    with torch.inference_mode(), self._autocast(opts.precision):
                        out = self.model.forward_frames(x)
                    for i in range(len(batch)):
                        with torch.inference_mode():  # not held across the yield
                            self._frame(done, out, i, matcher, text, scores, store, trace)
                        done += 1
                        el = time.perf_counter() - t0
                        yield SegmentProgress(done, info.num_frames, (done - start) / max(el, 1e-9), el,
                                              temp_bytes=store.bytes_written, start_frame=start)
                    del out, x
                    if resume is not None and resume.due():
                        resume.save(done, store, matcher, scores)
                if resume is not None and done > start:  # the final pass can be resumed on its own
                    resume.save(done, store, matcher, scores)
                if done == 0:
                    raise InputError(f"{info.source}: no frame could be decoded (corrupt or empty video)")
                info.num_frames = done
                info.frame_indices = info.frame_indices[:done]
                with torch.inference_mode():
                    final = scores.final().cpu()  # the final pass indexes CPU-stored frames with the selection
                    sel = select_instances(final, opts.detections or inf.detections)
                    if trace is not None:
                        trace.video_obj_logits, trace.final_scores, trace.selection = scores.video_obj_logits, final, sel
                    tracks = build_tracks(store, sel, geom, out_hw, vocab.labels, trace.instances if trace else None)
                temp_bytes = store.bytes_written
            tracks = [t for t in tracks if t.score >= opts.score_threshold]
            result = VideoTracks(info, list(vocab.entries), tracks, self.model_version(vocab, adapter), opts.to_dict())
            el = time.perf_counter() - t0
            yield SegmentProgress(done, done, (done - start) / max(el, 1e-9), el, result, temp_bytes, start)
        finally:
            close()

    def _restore(self, state: RunState | None, matcher: TemporalMatcher, scores: VideoScores) -> int:
        """Frames already done: 0, or a checkpoint's frames with its matcher memory and score sums."""
        if state is None:
            return 0
        matcher.restore(state.matcher_frame, state.matcher_memory)
        dev = lambda t: None if t is None else t.to(self.device)  # noqa: E731
        scores.restore(state.score_frames, dev(state.obj_sum), dev(state.mask_iou_sum))
        return state.frames

    def _frame(self, t, out, i, matcher, text, scores, store, trace):
        dec = out.decoder
        rec = matcher.match(dec.embeds[i])
        perm = torch.as_tensor(rec.perm, device=dec.masks.device)
        masks = dec.masks[i][perm].float()
        obj = dec.object_logits[i][perm].float()
        ious = dec.ious[i][perm].float()
        logits = frame_class_logits(self.model.backbone, text, out.dense[i:i + 1].float(), masks, self.cfg.inference.logit_scale_max)
        probs = F.softmax(logits, dim=-1)
        scores.add(probs, ious, obj)
        store.write(t, masks=masks, probs=probs, obj=obj)
        if trace is not None:
            trace.matches.append(rec)
            trace.obj_logits.append(obj.cpu())
            trace.ious.append(ious.cpu())
            trace.cls_logits.append(logits.cpu())

    def default_window(self) -> int:
        """Frames per network forward. Outputs do not depend on it (frames are independent until
        matching); on CPU one frame at a time is fastest (ConvNeXt-B at 480p: 2.2 s/frame alone vs
        3.3 s/frame in upstream's windows of 10, whose activations overflow the caches)."""
        return self.cfg.inference.window if self.device.type == "cuda" else 1

    def _autocast(self, precision: str):
        # ``autocast=True`` at load time is the older spelling of fp16 on CUDA.
        return autocast("fp16" if self.autocast and precision == "fp32" else precision, self.device)


def _windows(frames, size: int):
    batch = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def as_vocabulary(vocabulary) -> Vocabulary:
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    if isinstance(vocabulary, str):
        vocabulary = [vocabulary]
    return Vocabulary.from_names(list(vocabulary or []))


_segmenters: dict[tuple, Segmenter] = {}
_segmenters_lock = threading.Lock()


def get_segmenter(checkpoint: str, device: str = "auto", autocast: bool = False) -> Segmenter:
    """Per-process cache: built lazily on first use (inside a worker, never before a fork)."""
    key = (str(checkpoint), device, autocast)
    with _segmenters_lock:
        if key not in _segmenters:
            _segmenters[key] = Segmenter.load(str(checkpoint), device, autocast)
        return _segmenters[key]
