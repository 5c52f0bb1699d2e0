"""Checkpoint loading: full-size manifests key-for-key, strict errors, CLIP fill-in, registry, text cache."""
import json
import re

import pytest
import torch

from clipvis_core import text as text_mod
from clipvis_core.config import ModelConfig, released_config
from clipvis_core.errors import WeightsError
from clipvis_core.modeling.model import ClipVisModel
from clipvis_core.segmenter import Segmenter
from clipvis_core.vocabulary import Vocabulary
from clipvis_core.weights import (RELEASED, ResolvedCheckpoint, detect_config, load_model, prepare_state_dict,
                                  resolve_checkpoint)

DTYPES = {"torch.int64": torch.int64, "torch.float32": torch.float32}


def manifest_cases(ref_dir):
    return sorted(p for p in (ref_dir / "manifests").glob("manifest_*.json"))


def config_for(manifest: dict) -> ModelConfig:
    backbone = "convnext-b" if "convnext" in manifest["MODEL.FC_CLIP.CLIP_MODEL_NAME"].lower() else "rn50"
    return released_config(f"clipvis-{backbone}-dec{manifest['MODEL.MASK_FORMER.DEC_LAYERS']}")


def manifest_state_dict(manifest: dict) -> dict[str, torch.Tensor]:
    odd = manifest.get("non_float32_keys", {})
    return {k: torch.empty(shape, dtype=DTYPES.get(odd.get(k), torch.float32), device="meta") for k, shape in manifest["keys"].items()}


@pytest.fixture(scope="module")
def manifests(ref_dir):
    paths = manifest_cases(ref_dir)
    assert len(paths) >= 4, "expected the full-size manifests in the fixture folder"
    return {p.name: json.loads(p.read_text()) for p in paths}


def meta_model(cfg):
    with torch.device("meta"):
        return ClipVisModel(cfg)


def test_full_size_manifests_load_strictly(manifests):
    for name, m in manifests.items():
        cfg = config_for(m)
        model = meta_model(cfg)
        sd = manifest_state_dict(m)
        assert len(sd) == m["num_keys"]
        sd = prepare_state_dict(sd, model, ResolvedCheckpoint(name, cfg, None))
        model.load_state_dict(sd, strict=True, assign=True)
        assert detect_config(sd).name == cfg.name, name
        assert model.backbone.embed_dim == m["MODEL.FC_CLIP.EMBED_DIM"]


@pytest.mark.parametrize("tamper", ["drop", "extra", "shape"])
def test_tampered_manifest_fails_naming_the_key(manifests, tamper):
    m = next(v for k, v in manifests.items() if "ConvNeXt" in k)
    cfg = config_for(m)
    sd = manifest_state_dict(m)
    key = next(k for k in sd if "predictor.transformer_ffn_layers" in k and k.endswith("linear1.weight"))
    if tamper == "drop":
        del sd[key]
    elif tamper == "extra":
        sd[key.replace("linear1", "linear9")] = sd[key]
        key = key.replace("linear1", "linear9")
    else:
        sd[key] = torch.empty(3, 3, device="meta")
    with pytest.raises(WeightsError, match=re.escape(key)):
        prepare_state_dict(sd, meta_model(cfg), ResolvedCheckpoint("t", cfg, None))


def test_training_only_entries_tolerated(tiny_card, ref_dir, tmp_path):
    sd = torch.load(ref_dir / "tiny_model.pth", weights_only=True)["model"]
    ckpt = tmp_path / "with_optimizer.pth"
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": 3}, "iteration": 7}, ckpt)
    card = json.loads(tiny_card.read_text())
    card["checkpoint"] = str(ckpt)
    (tmp_path / "card.json").write_text(json.dumps(card))
    model = load_model(resolve_checkpoint(str(tmp_path / "card.json")))
    assert torch.equal(model.sem_seg_head.predictor.query_feat.weight, sd["sem_seg_head.predictor.query_feat.weight"])


def test_clip_weights_filled_from_local_file(tiny_card, ref_dir, tmp_path, monkeypatch):
    sd = torch.load(ref_dir / "tiny_model.pth", weights_only=True)["model"]
    prefix = "backbone.clip_model."
    torch.save({k: v for k, v in sd.items() if not k.startswith(prefix)}, tmp_path / "head_only.pth")
    torch.save({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, tmp_path / "clip.bin")
    card = json.loads(tiny_card.read_text())
    card["checkpoint"] = str(tmp_path / "head_only.pth")
    (tmp_path / "card.json").write_text(json.dumps(card))
    monkeypatch.delenv("CLIPVIS_CLIP_WEIGHTS", raising=False)
    with pytest.raises(WeightsError, match="CLIPVIS_CLIP_WEIGHTS"):
        load_model(resolve_checkpoint(str(tmp_path / "card.json")))
    monkeypatch.setenv("CLIPVIS_CLIP_WEIGHTS", str(tmp_path / "clip.bin"))
    model = load_model(resolve_checkpoint(str(tmp_path / "card.json")))
    got = model.backbone.clip_model.visual.trunk.stem[0].weight
    assert torch.equal(got, sd[prefix + "visual.trunk.stem.0.weight"])


def test_registry_names_missing_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPVIS_CACHE_DIR", str(tmp_path))
    name, entry = next(iter(RELEASED.items()))
    with pytest.raises(WeightsError) as e:
        resolve_checkpoint(name)
    msg = str(e.value)
    assert entry.url in msg and str(tmp_path / "checkpoints" / entry.filename) in msg and "\n" not in msg
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / entry.filename).write_bytes(b"")
    resolved = resolve_checkpoint(name)
    assert resolved.path == tmp_path / "checkpoints" / entry.filename
    assert resolved.config == released_config(entry.config)


@pytest.mark.parametrize("spec,match", [("nope-model", "unknown checkpoint"), ("/no/such/file.pth", "not found"),
                                        ("/no/such/card.json", "not found")])
def test_bad_checkpoint_specs(spec, match):
    with pytest.raises(WeightsError, match=match):
        resolve_checkpoint(spec)


def test_not_a_checkpoint_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        resolve_checkpoint(str(bad))


def test_text_classifier_cache(tiny_card, tmp_path, monkeypatch):
    seg = Segmenter.load(str(tiny_card), device="cpu")
    vocab = Vocabulary.from_names(["person", "car, automobile", "traffic light"])
    first = text_mod.build_text_classifier(seg.model.backbone, seg.tokenizer, vocab, tmp_path)
    assert list((tmp_path / "text").glob("*.pt"))

    def fail(*a, **k):
        raise AssertionError("text tower ran although every synonym was cached")

    monkeypatch.setattr(text_mod, "encode_prompts", fail)
    second = text_mod.build_text_classifier(seg.model.backbone, seg.tokenizer, vocab, tmp_path)
    assert torch.equal(first.embeddings, second.embeddings)
    assert second.num_synonyms == [1, 2, 1]
    # A different text tower must not hit the same cache entry.
    with torch.no_grad():
        seg.model.backbone.clip_model.ln_final.weight.add_(0.5)
    seg.model.backbone._text_digest = None
    with pytest.raises(AssertionError, match="text tower ran"):
        text_mod.build_text_classifier(seg.model.backbone, seg.tokenizer, vocab, tmp_path)
