"""`clipvis segment` at its hard edges, each through the real console entry point: outputs that are
not regular files, the umask, a missing/read-only CLIPVIS_TMPDIR, a full disk, a malformed model
card, a corrupt text-embedding cache, SIGTERM mid-run, mixed-size frame directories, duplicate and
over-long class names; and which OSErrors the job workers retry."""
from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import pytest
import torch
from videogen import make_video, shape_frames, write_frame_dir

from clipvis_core.jobs.tasks import is_permanent
from clipvis_core.tracks import VideoTracks, write_atomic

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path, **extra) -> dict:
    # No bytecode writes: a file-size limit must never leave a truncated .pyc in the checkout.
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", CLIPVIS_CACHE_DIR=str(tmp / "cache"))
    env.pop("CLIPVIS_TMPDIR", None)
    env.update(extra)
    return env


def _cli(args, env, preexec=None, timeout=300):
    p = subprocess.run([sys.executable, "-m", "clipvis_core", *map(str, args)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=timeout, preexec_fn=preexec)
    return p.returncode, p.stdout, p.stderr


def _one_error_line(rc, err) -> str:
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("clipvis: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", 4, 48, 64, fps=8.0)


def _segment(clip, card, out, *extra):
    return ["segment", clip, "--checkpoint", card, "-o", out, "--class", "red ball", *extra]


# -- outputs ---------------------------------------------------------------------------------------
def test_output_onto_a_device_or_symlink_is_refused(clip, tiny_card, tmp_path):
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    line = _one_error_line(*_cli(_segment(clip, tiny_card, "/dev/null", "--quiet"), _env(tmp_path))[::2])
    assert "/dev/null" in line and "not a regular file" in line
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # still the device
    target = tmp_path / "keep.json"
    target.write_text("precious")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    line = _one_error_line(*_cli(_segment(clip, tiny_card, link, "--quiet"), _env(tmp_path))[::2])
    assert "symlink" in line
    assert link.is_symlink() and target.read_text() == "precious"
    with pytest.raises(ValueError, match="not a regular file"):  # the core refuses too
        write_atomic(link, "x")
    assert link.is_symlink() and target.read_text() == "precious"


def test_write_atomic_never_touches_the_process_umask(tmp_path):
    calls = []

    def profile(frame, event, arg):
        if event == "c_call" and getattr(arg, "__name__", "") == "umask":
            calls.append(arg)

    old = os.umask(0o027)
    try:
        sys.setprofile(profile)
        try:
            path = write_atomic(tmp_path / "out.json", "{}")
        finally:
            sys.setprofile(None)
    finally:
        os.umask(old)
    assert calls == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 less the umask, as for any new file
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# -- CLIPVIS_TMPDIR and full disks -----------------------------------------------------------------
def test_missing_or_unusable_tmpdir_is_one_line(clip, tiny_card, tmp_path):
    for tmpdir in (tmp_path / "nope", clip):  # missing; a file, not a directory
        line = _one_error_line(*_cli(_segment(clip, tiny_card, tmp_path / "o.json", "--quiet"),
                                     _env(tmp_path, CLIPVIS_TMPDIR=str(tmpdir)))[::2])
        assert f"CLIPVIS_TMPDIR={tmpdir}" in line


def test_read_only_tmpdir_is_one_line(tiny_card):
    # Permission bits do not bind root: the run drops to an unprivileged user when it has to.
    shared = Path(tempfile.mkdtemp(prefix="clipvis-ro-"))
    try:
        shared.chmod(0o755)
        src = make_video(shared / "clip.mp4", 3, 48, 64, fps=8.0)
        ro, out = shared / "ro", shared / "out"
        ro.mkdir()
        ro.chmod(0o555)
        out.mkdir()
        out.chmod(0o777)  # the output folder is fine: only the temp folder is not
        cmd = [sys.executable, "-m", "clipvis_core", *_segment(src, tiny_card, out / "o.json", "--quiet")]
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        env = _env(shared, CLIPVIS_TMPDIR=str(ro), HOME=str(shared))
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        line = _one_error_line(p.returncode, p.stderr)
        assert f"CLIPVIS_TMPDIR={ro}" in line and "Permission denied" in line
    finally:
        shutil.rmtree(shared)


def test_full_disk_is_one_line_and_leaves_nothing(clip, tiny_card, tmp_path):
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    out = tmp_path / "out.json"

    def small_disk():  # writes past 16 KB fail like a full disk (EFBIG) instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    rc, _, err = _cli(_segment(clip, tiny_card, out, "--quiet"), _env(tmp_path, CLIPVIS_TMPDIR=str(tmpdir)),
                      preexec=small_disk)
    line = _one_error_line(rc, err)
    assert "File too large" in line or "disk" in line
    assert not out.exists() and list(tmpdir.iterdir()) == []


# -- model card, text cache, vocabulary --------------------------------------------------------------
@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"checkpoint": "x.pth"}', '{"config": {"nope": 1}}'])
def test_malformed_model_card_is_one_line(clip, tmp_path, text):
    card = tmp_path / "card.json"
    card.write_text(text)
    line = _one_error_line(*_cli(_segment(clip, card, tmp_path / "o.json", "--quiet"), _env(tmp_path))[::2])
    assert f"model card {card} is malformed" in line


def test_duplicates_merged_long_names_warned_corrupt_text_cache_rebuilt(clip, tiny_card, tmp_path):
    long_name = " ".join(["verylongword"] * 40)
    out = tmp_path / "out.json"
    args = ["segment", clip, "--checkpoint", tiny_card, "-o", out, "--class", "car", "--class", "Car  ",
            "--class", "CAR, automobile", "--class", long_name, "--quiet"]
    rc, _, err = _cli(args, _env(tmp_path))
    assert rc == 0, err
    assert err.count("clipvis: warning:") == 2 and "merged into 'car,automobile'" in err
    assert "longer than the text encoder's 77-token context" in err and "truncated" in err
    assert VideoTracks.load(out).vocabulary == ["car,automobile", long_name]

    (cache,) = (tmp_path / "cache" / "text").glob("*.pt")
    cache.write_bytes(b"\x80\x04 definitely not a torch file")
    out.unlink()
    rc, _, err = _cli(args, _env(tmp_path))
    assert rc == 0, err
    assert "text-embedding cache" in err and "rebuilding it" in err
    table = torch.load(cache, weights_only=True)  # rewritten whole
    assert {"car", "automobile", long_name} <= set(table)
    assert out.exists()


def test_mixed_size_frame_directory_is_caught_before_the_model_loads(tmp_path):
    frames = write_frame_dir(tmp_path / "frames", shape_frames(4, 48, 64, seed=1), ext=".png")
    cv2.imwrite(str(sorted(frames.iterdir())[2]), shape_frames(1, 40, 64, seed=2)[0])
    # An unknown checkpoint would be the error if the model were resolved first.
    line = _one_error_line(*_cli(["segment", frames, "--checkpoint", "no-such-model", "-o", tmp_path / "o.json",
                                  "--class", "ball", "--quiet"], _env(tmp_path))[::2])
    names = sorted(p.name for p in frames.iterdir())
    assert f"frame {names[2]} is 64x40 but {names[0]} is 64x48" in line


# -- SIGTERM -----------------------------------------------------------------------------------------
def test_sigterm_removes_the_per_frame_store(tiny_card, tmp_path):
    long_clip = make_video(tmp_path / "long.mp4", 200, 48, 64, fps=10.0)
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "clipvis_core", *_segment(long_clip, tiny_card, tmp_path / "o.json")],
                            env=_env(tmp_path, CLIPVIS_TMPDIR=str(tmpdir)), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    seen = []

    def read():
        for chunk in iter(lambda: proc.stderr.read(1), ""):
            seen.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while "segment:" not in "".join(seen) or " 0/" in "".join(seen)[-40:]:  # frames are being processed
        assert proc.poll() is None and time.monotonic() < deadline, "".join(seen)[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    reader.join(10)
    assert "clipvis: terminated" in "".join(seen)
    assert list(tmpdir.iterdir()) == [] and not (tmp_path / "o.json").exists()


# -- job workers: which OSErrors are retried -----------------------------------------------------------
def test_permanent_os_errors_are_not_retried(tmp_path):
    def error_of(action):
        try:
            action()
        except OSError as e:
            return e
        raise AssertionError("no error")

    (tmp_path / "f").write_text("x")
    permanent = [error_of(lambda: open(tmp_path / "missing.mp4", "rb")),
                 error_of(lambda: open(tmp_path, "rb")),  # a directory
                 error_of(lambda: open(tmp_path / "f" / "x", "w"))]  # a file as a directory
    with open("/dev/full", "wb", buffering=0) as full:
        permanent.append(error_of(lambda: full.write(b"x")))  # no space left on device
    assert [e.errno for e in permanent] == [errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENOSPC]
    assert all(is_permanent(e) for e in permanent)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        refused = error_of(lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
    assert isinstance(refused, ConnectionRefusedError) and not is_permanent(refused)  # a service restarting


def test_full_disk_at_the_output_names_it_and_leaves_nothing(tiny_card, tmp_path):
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), shape_frames(1, 48, 64, seed=3)[0])
    out = tmp_path / "out" / "tracks.json"
    args = ["segment", image, "--checkpoint", tiny_card, "-o", out, "--class", "red ball", "--class", "box",
            "--quiet"]
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    env = _env(tmp_path, CLIPVIS_TMPDIR=str(tmpdir))
    rc, _, err = _cli(args, env)  # a first run fills the text cache and tells the output's size
    assert rc == 0, err
    limit = out.stat().st_size // 2
    out.unlink()

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    line = _one_error_line(*_cli(args, env, preexec=small_disk)[::2])
    assert f"writing {out}" in line and "free space" in line
    assert list(out.parent.iterdir()) == [] and list(tmpdir.iterdir()) == []  # no half file, no temp file
