"""First run after set-up: segment a generated clip with the CLI, as a new user would.

Uses a released checkpoint when one is in the cache dir; otherwise a tiny random-weight model
(and says so: its tracks are meaningless, it only proves the pipeline runs end to end).
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from clipvis_core.weights import RELEASED, available_checkpoints, checkpoints_dir  # noqa: E402
from videogen import make_video  # noqa: E402

out = ROOT / "outputs" / "first_run"
out.mkdir(parents=True, exist_ok=True)
clip = make_video(out / "shapes.mp4", num_frames=16, height=240, width=320, fps=8)
found = available_checkpoints()
if found:
    checkpoint = found[0]
    print(f"using released checkpoint {checkpoint}")
else:
    checkpoint = "random:tiny"
    first = next(iter(RELEASED.values()))
    print("NOTE: no released CLIP-VIS weights on this machine - running a TINY RANDOM-WEIGHT model, so the tracks "
          "below are not meaningful. For real results download e.g. "
          f"{first.name} from {first.url} and save it as {checkpoints_dir() / first.filename} "
          "(`clipvis checkpoints` lists all).")
cmd = [str(ROOT / ".venv" / "bin" / "clipvis"), "segment", str(clip), "--checkpoint", checkpoint,
       "--class", "red ball, ball", "--class", "green box", "--class", "person",
       "--output", str(out / "tracks.json"), "--overlay", str(out / "overlay.mp4")]
print("$", " ".join(cmd))
sys.exit(subprocess.call(cmd))
