"""Text classifier: prompt-ensembled CLIP text embeddings of a vocabulary, with an on-disk cache.

One row per synonym: every synonym's 14 templated prompts are encoded, L2-normalised, averaged and
normalised again (upstream). Rows are cached per synonym, keyed by a hash of the text tower's
weights and the templates, so a large vocabulary is encoded once and later vocabularies reuse rows.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .tracks import write_atomic
from .vocabulary import PROMPT_TEMPLATES, Vocabulary

_TEXT_TOWER_PREFIXES = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection")
_lock = threading.Lock()
log = logging.getLogger("clipvis")


@dataclass
class TextClassifier:
    embeddings: torch.Tensor  # [S, D] one normalised row per synonym
    num_synonyms: list[int]  # synonyms per class, in vocabulary order

    def logits(self, visual: torch.Tensor, logit_scale: torch.Tensor, max_scale: float = 100.0) -> torch.Tensor:
        """visual [..., Q, D] -> class logits [..., Q, C]: max over each class's synonyms."""
        scale = torch.clamp(logit_scale.exp(), max=max_scale)
        per_syn = scale * F.normalize(visual, dim=-1) @ self.embeddings.T
        out, i = [], 0
        for n in self.num_synonyms:
            out.append(per_syn[..., i:i + n].max(-1).values)
            i += n
        return torch.stack(out, dim=-1)


def text_tower_digest(adapter) -> str:
    """sha256 over the text tower's parameters (names, shapes and bytes)."""
    cached = getattr(adapter, "_text_digest", None)
    if cached:
        return cached
    h = hashlib.sha256()
    for name, t in sorted(adapter.clip_model.state_dict().items()):
        if name.startswith(_TEXT_TOWER_PREFIXES):
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    adapter._text_digest = h.hexdigest()[:24]
    return adapter._text_digest


def encode_prompts(adapter, tokenizer, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Raw (un-normalised) text features for each prompt, batched by token length."""
    tokens = tokenizer(prompts)
    device = adapter.clip_model.positional_embedding.device
    order = torch.argsort(tokens.argmax(-1), stable=True)  # similar lengths share a cropped batch
    out = torch.empty(len(prompts), adapter.embed_dim)
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            idx = order[i:i + batch_size]
            out[idx] = adapter.encode_text(tokens[idx].to(device)).float().cpu()
    return out


def ensemble(raw: torch.Tensor, num_templates: int) -> torch.Tensor:
    """[S * num_templates, D] raw prompt features -> [S, D] normalised synonym rows."""
    x = raw / raw.norm(dim=-1, keepdim=True)
    x = x.reshape(-1, num_templates, x.shape[-1]).mean(1)
    return x / x.norm(dim=-1, keepdim=True)


def warn_truncated(tokenizer, synonyms: list[str], templates: tuple[str, ...]) -> list[str]:
    """Synonyms whose templated prompts exceed the text encoder's context (they get cut off)."""
    encode, context = getattr(tokenizer, "encode", None), getattr(tokenizer, "context_length", None)
    if encode is None or not context:
        return []
    overhead = max(len(encode(t.replace("{}", ""))) for t in templates) + 2  # + start/end tokens
    long = [s for s in dict.fromkeys(synonyms) if len(encode(s)) + overhead > context]
    for s in long:
        log.warning("class name %r is longer than the text encoder's %d-token context with its prompt: "
                    "it is truncated (shorten it)", s if len(s) <= 60 else s[:57] + "...", context)
    return long


def build_text_classifier(adapter, tokenizer, vocabulary: Vocabulary, cache_dir: str | os.PathLike | None = None,
                          templates: tuple[str, ...] = PROMPT_TEMPLATES) -> TextClassifier:
    synonyms = [s for syns in vocabulary.synonyms for s in syns]
    warn_truncated(tokenizer, synonyms, templates)
    cache = _RowCache(Path(cache_dir), text_tower_digest(adapter), templates) if cache_dir else None
    rows = cache.get(synonyms) if cache else {}
    missing = list(dict.fromkeys(s for s in synonyms if s not in rows))
    if missing:
        prompts = [t.format(s) for s in missing for t in templates]
        new = ensemble(encode_prompts(adapter, tokenizer, prompts), len(templates))
        rows.update(zip(missing, new))
        if cache:
            cache.put(dict(zip(missing, new)))
    emb = torch.stack([rows[s] for s in synonyms]).to(adapter.clip_model.positional_embedding.device)
    return TextClassifier(emb, vocabulary.num_synonyms)


class _RowCache:
    """One file per (text tower, templates): {synonym: row}. Merged on write, replaced atomically."""

    def __init__(self, root: Path, tower: str, templates: tuple[str, ...]):
        tkey = hashlib.sha256("\n".join(templates).encode()).hexdigest()[:12]
        self.path = root / "text" / f"{tower}-{tkey}.pt"

    def _read(self) -> dict[str, torch.Tensor]:
        try:
            table = torch.load(self.path, weights_only=True)
        except FileNotFoundError:
            return {}
        except Exception as e:  # a truncated or foreign file raises anything from the unpickler
            log.warning("text-embedding cache %s is unreadable (%s): rebuilding it", self.path, type(e).__name__)
            return {}
        if not isinstance(table, dict) or not all(isinstance(v, torch.Tensor) for v in table.values()):
            log.warning("text-embedding cache %s holds no embedding table: rebuilding it", self.path)
            return {}
        return table

    def get(self, synonyms: list[str]) -> dict[str, torch.Tensor]:
        table = self._read()
        return {s: table[s] for s in synonyms if s in table}

    def put(self, rows: dict[str, torch.Tensor]) -> None:
        with _lock:
            table = self._read()
            table.update({k: v.clone() for k, v in rows.items()})
            buf = io.BytesIO()
            torch.save(table, buf)
            write_atomic(self.path, buf.getvalue())
