"""Precision modes (fp32 / bf16 / fp16): each runs end to end on CPU where it can, fp32 is unchanged,
fp16 on CPU is one line naming bf16, bf16 on a CPU without bfloat16 kernels is one line naming fp32
unless allowed, and the job key only changes away from fp32."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from videogen import make_video

from clipvis_core.errors import InputError
from clipvis_core.jobs import JobSettings, JobSpec, run_job
from clipvis_core.segmenter import SegmentOptions, Segmenter
from clipvis_core.tracks import VideoTracks

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["--class", "red ball", "--class", "car, automobile", "--class", "dog"]


@pytest.fixture(autouse=True)
def allow_slow_bf16(monkeypatch):
    """bf16 runs here on any CPU (the tiny model takes seconds even emulated); the refusal on CPUs
    without bfloat16 kernels is tested on its own below."""
    monkeypatch.setenv("CLIPVIS_ALLOW_SLOW_BF16", "1")


@pytest.fixture(scope="module")
def seg(tiny_card):
    return Segmenter.load(str(tiny_card), device="cpu")


@pytest.fixture(scope="module")
def fixture_run(ref_dir):
    frames = np.load(ref_dir / "video_input.npz")["frames_uint8"]
    cfg = json.loads((ref_dir / "tiny_config.json").read_text())
    return frames, cfg["vocabulary"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("prec") / "clip.mp4", 5, 64, 96, fps=10)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "clipvis_core", *map(str, args)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_fp32_is_the_unchanged_default(seg, fixture_run):
    frames, vocab = fixture_run
    base = seg.segment(frames, vocab, SegmentOptions(min_size=0)).to_dict()
    explicit = seg.segment(frames, vocab, SegmentOptions(min_size=0, precision="fp32")).to_dict()
    assert explicit["tracks"] == base["tracks"]
    assert base["options"]["precision"] == "fp32"


def test_bf16_runs_the_network_in_bfloat16(seg, fixture_run):
    frames, vocab = fixture_run
    seen = []
    hook = seg.model.sem_seg_head.predictor.register_forward_hook(lambda m, i, out: seen.append(out.masks.dtype))
    try:
        fp32 = seg.segment(frames, vocab, SegmentOptions(min_size=0))
        n = len(seen)
        bf16 = seg.segment(frames, vocab, SegmentOptions(min_size=0, precision="bf16"))
    finally:
        hook.remove()
    assert set(seen[:n]) == {torch.float32} and set(seen[n:]) == {torch.bfloat16}
    # Same output shape and contract: one mask per frame for as many tracks, scores in [0, 1].
    assert len(bf16.tracks) == len(fp32.tracks)
    assert all(len(t.masks) == len(frames) and 0.0 <= t.score <= 1.0 for t in bf16.tracks)
    assert [t.score for t in bf16.tracks] != [t.score for t in fp32.tracks]  # autocast changed the arithmetic
    assert bf16.options["precision"] == "bf16"


def test_fp16_on_cpu_is_refused_in_the_api(seg, fixture_run):
    frames, vocab = fixture_run
    with pytest.raises(InputError, match="bf16"):
        seg.segment(frames, vocab, SegmentOptions(min_size=0, precision="fp16"))
    with pytest.raises(InputError, match="fp32, bf16, fp16"):
        seg.segment(frames, vocab, SegmentOptions(min_size=0, precision="half"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cli_segment_each_cpu_precision(video, tiny_card, tmp_path, precision):
    out = tmp_path / "t.json"
    rc, _, err = _cli("segment", video, "--checkpoint", tiny_card, "-o", out, *CLASSES, "--device", "cpu",
                      "--precision", precision, "--quiet")
    assert rc == 0, err
    vt = VideoTracks.load(out)
    assert vt.options["precision"] == precision and vt.tracks
    assert all(len(t.masks) == vt.video.num_frames for t in vt.tracks)


def test_cli_fp16_on_cpu_is_one_line_and_writes_nothing(video, tiny_card, tmp_path):
    out = tmp_path / "t.json"
    rc, _, err = _cli("segment", video, "--checkpoint", tiny_card, "-o", out, *CLASSES, "--device", "cpu",
                      "--precision", "fp16", "--quiet")
    assert rc == 2
    assert err.strip().count("\n") == 0 and err.startswith("clipvis: error:") and "bf16" in err
    assert not out.exists()


def test_bf16_on_a_cpu_without_bfloat16_kernels_is_one_line_unless_allowed(video, tiny_card, tmp_path, monkeypatch,
                                                                         capsys):
    from clipvis_core import precision
    from clipvis_core.cli import main

    # The hardware probe answers for an AVX2-only CPU (this machine kind has both kinds of CPU).
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.delenv("CLIPVIS_ALLOW_SLOW_BF16")
    out = tmp_path / "t.json"
    args = ["segment", str(video), "--checkpoint", str(tiny_card), "-o", str(out), *CLASSES, "--device", "cpu", "--quiet"]
    assert main([*args, "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "use fp32" in err and "CLIPVIS_ALLOW_SLOW_BF16=1" in err, err
    assert not out.exists()
    monkeypatch.setenv("CLIPVIS_PRECISION", "bf16")
    monkeypatch.setenv("CLIPVIS_DEVICE", "cpu")
    monkeypatch.delenv("CLIPVIS_BROKER_URL", raising=False)
    from backend.settings import BackendSettings
    from plugin import params as P

    with pytest.raises(InputError, match="CLIPVIS_PRECISION: precision bf16 is emulated"):
        BackendSettings.from_env(checkpoint=str(tiny_card))
    with pytest.raises(InputError, match="use fp32"):
        P._precision("bf16")  # the FiftyOne form shows it and keeps Execute disabled
    monkeypatch.setenv("CLIPVIS_ALLOW_SLOW_BF16", "1")
    assert main([*args, "--precision", "bf16"]) == 0
    assert VideoTracks.load(out).options["precision"] == "bf16"
    # CUDA and fp32 are not this check's business.
    assert precision.check_precision("bf16", "cuda") == "bf16" and precision.check_precision("fp32", "cpu") == "fp32"


def test_job_key_changes_only_away_from_fp32(video, tiny_card):
    plain = JobSpec(str(video), ["dog"], str(tiny_card))
    fp32 = JobSpec(str(video), ["dog"], str(tiny_card), options={"precision": "fp32"})
    bf16 = JobSpec(str(video), ["dog"], str(tiny_card), options={"precision": "bf16"})
    assert plain.key() == fp32.key() != bf16.key()
    with pytest.raises(InputError, match="fp32, bf16, fp16"):
        JobSpec(str(video), ["dog"], str(tiny_card), options={"precision": "float8"})


def test_bf16_job_runs_in_process(video, tiny_card, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPVIS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("CLIPVIS_BROKER_URL", raising=False)
    monkeypatch.setenv("CLIPVIS_DEVICE", "cpu")
    tracks = run_job(JobSpec(str(video), ["dog", "car"], str(tiny_card), options={"precision": "bf16"}),
                     settings=JobSettings.from_env())
    assert tracks.options["precision"] == "bf16" and tracks.video.num_frames == 5


def test_backend_setting(tiny_card, monkeypatch):
    from backend.model import ClipvisBackend  # noqa: F401  (imports the host as the server does)
    from backend.settings import BackendSettings

    monkeypatch.delenv("CLIPVIS_BROKER_URL", raising=False)
    monkeypatch.setenv("CLIPVIS_DEVICE", "cpu")
    monkeypatch.setenv("CLIPVIS_PRECISION", "bf16")
    assert BackendSettings.from_env(checkpoint=str(tiny_card)).precision == "bf16"
    monkeypatch.setenv("CLIPVIS_PRECISION", "fp16")
    with pytest.raises(InputError, match="CLIPVIS_PRECISION.*bf16"):
        BackendSettings.from_env(checkpoint=str(tiny_card))


def test_fiftyone_request_carries_precision_into_the_job(video, tiny_card, monkeypatch):
    from plugin import params as P
    from plugin.runner import job_spec
    from clipvis_core.vocabulary import Vocabulary

    monkeypatch.delenv("CLIPVIS_BROKER_URL", raising=False)
    monkeypatch.setenv("CLIPVIS_DEVICE", "cpu")
    assert P._precision(None) == "fp32" and P._precision("bf16") == "bf16"
    with pytest.raises(InputError, match="bf16"):
        P._precision("fp16")
    req = P.SegmentRequest(Vocabulary.from_names(["dog"]), str(tiny_card), 0.1, None, 1, "clipvis", True,
                           precision="bf16")
    assert job_spec(str(video), req).options["precision"] == "bf16"
    plain = job_spec(str(video), P.SegmentRequest(Vocabulary.from_names(["dog"]), str(tiny_card), 0.1, None, 1,
                                                  "clipvis", True))
    assert "precision" not in plain.options
