import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/videogen.py


def reference_dir() -> Path:
    d = Path(os.environ.get("CLIPVIS_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
    if not (d / "tiny_config.json").exists():
        raise RuntimeError(f"reference fixtures not found in {d}: set CLIPVIS_REFERENCE_DIR")
    return d


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    return reference_dir()


@pytest.fixture(scope="session")
def tiny_card(ref_dir, tmp_path_factory) -> Path:
    """A model card (config + checkpoint path) for the fixture's tiny checkpoint: usable as --checkpoint."""
    from clipvis_core.config import ModelConfig

    # Test videos are ~100 px: resizing them to upstream's 480 px shorter side only costs CI time.
    cfg = ModelConfig.from_reference(ref_dir / "tiny_config.json").with_inference(min_size=128)
    card = tmp_path_factory.mktemp("card") / "tiny_card.json"
    card.write_text(json.dumps({"config": cfg.to_dict(), "checkpoint": str(ref_dir / "tiny_model.pth")}))
    return card


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server (its own virtualenv), started once per session for every module."""
    from test_labelstudio_e2e import start_label_studio

    yield from start_label_studio(tmp_path_factory)
