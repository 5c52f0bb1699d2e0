"""Built-in vocabularies, vocabulary files and resolve_vocabulary; `clipvis vocab`."""
import json
from pathlib import Path

import pytest

from clipvis_core.builtin_vocabularies import (builtin_names, list_vocabularies, load_vocabulary,
                                               read_vocabulary_file, resolve_vocabulary)
from clipvis_core.cli import main
from clipvis_core.vocabulary import VocabularyError

DATA = Path(__file__).resolve().parents[1] / "clipvis_core" / "data" / "vocabularies"


def _cats(file):
    return json.loads((DATA / file).read_text())["categories"]


def test_list_matches_packaged_files():
    infos = {i.name: i for i in list_vocabularies()}
    files = {"lvvis": "lvvis.json", "lvis": "lvis_v1.json", "ytvis2019": "ytvis_2019.json",
             "ytvis2021": "ytvis_2021.json", "ovis": "ovis.json", "burst": "burst.json", "coco": "coco.json"}
    assert set(infos) == set(files)
    for name, file in files.items():
        assert infos[name].count == len(_cats(file)) == len(load_vocabulary(name))
        assert infos[name].description


def test_names_kept_as_datasets_spell_them():
    for name, file in [("lvvis", "lvvis.json"), ("ytvis2019", "ytvis_2019.json"), ("ovis", "ovis.json")]:
        voc = load_vocabulary(name)
        assert list(voc.entries) == [c["name"] for c in _cats(file)]  # raw, underscores and case kept
        assert [m["id"] for m in voc.meta] == [c["id"] for c in _cats(file)]


def test_lvvis_splits_follow_partition():
    cats = _cats("lvvis.json")
    base, novel = load_vocabulary("lvvis:base"), load_vocabulary("lvvis", split="novel")
    assert {m["partition"] for m in base.meta} == {0, 1}
    assert {m["partition"] for m in novel.meta} == {2, 3}
    assert len(base) + len(novel) == len(cats)
    assert set(base.entries).isdisjoint(novel.entries)


def test_lvis_synonyms_and_frequency_splits():
    cats = _cats("lvis_v1.json")
    voc = load_vocabulary("lvis_v1")
    for entry, cat, label in zip(voc.entries, cats, voc.labels):
        assert label == cat["name"]  # dataset name first: it is the display label
        assert set(entry.split(", ")) == {cat["name"], *cat["synonyms"]}
    base, rare = load_vocabulary("LVIS:base"), load_vocabulary("lvis:rare")
    assert {m["frequency"] for m in base.meta} == {"f", "c"}
    assert {m["frequency"] for m in rare.meta} == {"r"}
    assert len(base) + len(rare) == len(cats)
    assert load_vocabulary("lvis:novel").entries == rare.entries


def test_every_advertised_name_loads():
    for name in builtin_names():
        assert len(load_vocabulary(name)) > 0


@pytest.mark.parametrize("name,words", [("nope", "unknown built-in"), ("ovis:base", "no split"),
                                        ("lvvis:rare", "no split")])
def test_bad_builtin_names(name, words):
    with pytest.raises(VocabularyError, match=words):
        load_vocabulary(name)


def test_vocabulary_text_file(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("\ufeff# my classes\ncar, automobile\n\n  person  \n# trailing comment\nzebra\n", encoding="utf-8")
    voc = read_vocabulary_file(f)
    assert voc.entries == ("car, automobile", "person", "zebra")
    assert voc.synonyms[0] == ["car", "automobile"]


def test_vocabulary_json_files(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(["cat", "dog"]))
    assert read_vocabulary_file(a).entries == ("cat", "dog")
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"categories": [{"id": 7, "name": "cat", "synonyms": ["kitty"]}, {"id": 9, "name": "dog"}]}))
    voc = read_vocabulary_file(b)
    assert voc.entries == ("cat, kitty", "dog") and [m["id"] for m in voc.meta] == [7, 9]


def test_resolve_combines_sources_in_order_without_duplicates(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("truck\nperson\n")
    voc = resolve_vocabulary([" person ", "car, automobile", "person"], f, "ytvis2019")
    yt = load_vocabulary("ytvis2019").entries
    assert voc.entries[:3] == ("person", "car, automobile", "truck")
    assert voc.entries[3:] == tuple(e for e in yt if e not in ("person", "truck"))
    assert len(voc.meta) == len(voc)
    assert resolve_vocabulary(None, None, "ovis").meta[0]["id"] == 1


@pytest.mark.parametrize("make", [
    lambda p: dict(),
    lambda p: dict(classes=["", "  "]),
    lambda p: dict(file=p / "missing.txt"),
    lambda p: dict(file=(p / "c.txt", (p / "c.txt").write_text("# only a comment\n\n"))[0]),
    lambda p: dict(file=(p / "b.json", (p / "b.json").write_text("{not json"))[0]),
    lambda p: dict(classes=["car, "]),
    lambda p: dict(builtin="nope"),
])
def test_resolve_bad_input(tmp_path, make):
    with pytest.raises(VocabularyError) as e:
        resolve_vocabulary(**make(tmp_path))
    assert "\n" not in str(e.value)


def test_cli_vocab_list_and_show(capsys, tmp_path):
    assert main(["vocab", "list"]) == 0
    out = capsys.readouterr().out
    for info in list_vocabularies():
        assert info.name in out and str(info.count) in out
    assert main(["vocab", "show", "lvvis:novel"]) == 0
    shown = capsys.readouterr().out
    f = tmp_path / "novel.txt"
    f.write_text(shown)
    assert read_vocabulary_file(f).entries == load_vocabulary("lvvis:novel").entries  # round-trips as --vocab-file
    assert main(["vocab", "show", "coco", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [c["id"] for c in _cats("coco.json")]


def test_cli_vocab_unknown_name_exit_2(capsys):
    assert main(["vocab", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown built-in vocabulary" in err
