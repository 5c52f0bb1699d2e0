"""Typed configs: released variants, the fixture format and upstream detectron2 YAML agree."""
from dataclasses import replace

import pytest

from clipvis_core.config import CONFIG_DIR, ModelConfig, released_config


def test_released_variants_round_trip():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    assert names == ["clipvis-convnext-b-dec10", "clipvis-convnext-b-dec7", "clipvis-rn50-dec10", "clipvis-rn50-dec7"]
    for n in names:
        cfg = released_config(n)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        inf = cfg.inference
        assert (inf.memory_len, inf.top_k, inf.detections, inf.min_size, inf.window) == (9, 5, 50, 480, 10)
        assert cfg.decoder.dec_layers == int(n[-2:].lstrip("c"))


def test_detectron2_yaml_matches_fixture_config(ref_dir):
    from_yaml = ModelConfig.from_detectron2_yaml(ref_dir / "detectron2_cfg.yaml")
    from_ref = ModelConfig.from_reference(ref_dir / "tiny_config.json")
    # The YAML has no open_clip model dict and no hard-coded encoder constants: compare the rest.
    same = replace(from_yaml, name=from_ref.name, clip_model_cfg=from_ref.clip_model_cfg, clip_pretrained=None,
                   inference=replace(from_yaml.inference, min_size=from_ref.inference.min_size, max_size=from_ref.inference.max_size))
    assert same == from_ref


def test_unknown_keys_rejected():
    d = released_config("clipvis-rn50-dec7").to_dict()
    d["decoder"]["num_querys"] = 3
    with pytest.raises(ValueError, match="num_querys"):
        ModelConfig.from_dict(d)
