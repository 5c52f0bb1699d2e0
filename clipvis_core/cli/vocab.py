"""`clipvis vocab list` / `clipvis vocab show NAME`: the built-in vocabularies."""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("vocab", help="list or show built-in vocabularies",
                              description="Built-in vocabularies: the benchmarks' category lists.")
    sub = p.add_subparsers(dest="vocab_command", required=True)
    ls = sub.add_parser("list", help="list built-in vocabularies and their splits")
    ls.set_defaults(func=_list)
    show = sub.add_parser("show", help="print a vocabulary, one class per line (usable as --vocab-file)")
    show.add_argument("name", help="built-in name, optionally with a split: lvvis, lvvis:novel, lvis:rare, ...")
    show.add_argument("--json", action="store_true", help="print classes with their metadata as JSON")
    show.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    from ..builtin_vocabularies import builtin_names, list_vocabularies

    infos = list_vocabularies()
    width = max(len(i.name) for i in infos)
    for i in infos:
        print(f"{i.name:<{width}}  {i.count:>5}  {i.description}")
    print(f"\nnames accepted by --vocab: {', '.join(builtin_names())}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..builtin_vocabularies import load_vocabulary

    voc = load_vocabulary(args.name)
    if args.json:
        print(json.dumps([{"class": e, **m} for e, m in zip(voc.entries, voc.meta)], indent=1))
    else:
        print("\n".join(voc.entries))
    return 0
