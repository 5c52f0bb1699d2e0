"""`clipvis adapt`: labelled instances (masks or boxes) -> a classifier adapter file.

Only parses arguments and calls ``clipvis_core.adaptation``: examples -> embeddings -> prototypes +
blend weight -> adapter file (atomic write), recorded in the model card when the checkpoint is one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "adapt", help="adapt the classifier to your labelled instances (seconds, CPU)",
        description="Compute per-class visual prototypes from confirmed or corrected instances (a mask or a box, "
                    "and a label) and blend them with the text classifier; the blend weight is chosen by "
                    "leave-one-out on the instances. Writes an adapter file for `clipvis segment --adapter`.")
    p.add_argument("--data", action="append", required=True, metavar="SOURCE",
                   help="COCO or YouTube-VIS JSON (masks or boxes), a Label Studio export JSON, "
                        "fiftyone:DATASET[:FIELD][@VIEW] or labelstudio:PROJECT_ID; repeat to combine")
    p.add_argument("--checkpoint", required=True, metavar="NAME|CARD|PTH", help="the model the adapter is for")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="ADAPTER", help="adapter file to write (.pt)")
    voc = p.add_argument_group("vocabulary (optional: default = the data's categories; unknown labels are added)")
    voc.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                     help='a class; repeat for more; synonyms comma-separated: --class "car, automobile"')
    voc.add_argument("--vocab-file", type=Path, metavar="FILE", help="text file, one class per line (# comments)")
    voc.add_argument("--vocab", metavar="BUILTIN", help="built-in vocabulary (see `clipvis vocab list`)")
    p.add_argument("--images", metavar="DIR", help="image root for annotation files whose paths are relative elsewhere")
    p.add_argument("--frames-per-instance", type=int, default=3, metavar="N",
                   help="annotated frames pooled per instance, evenly spaced (default 3)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..adaptation import AdaptOptions, ExampleSet, fit_adapter, open_examples, record_in_card
    from ..builtin_vocabularies import resolve_vocabulary

    out = args.output.expanduser()
    if out.is_dir():
        raise InputError(f"--output {out} is a directory: give a file name, e.g. {out / 'adapter.pt'}")
    if args.frames_per_instance < 1:
        raise InputError(f"--frames-per-instance {args.frames_per_instance}: use at least 1")
    vocab = None
    if args.classes or args.vocab_file or args.vocab:
        vocab = resolve_vocabulary(args.classes, args.vocab_file, args.vocab)
    found = ExampleSet([])
    for spec in args.data:  # every source is read (and checked) before the model loads
        part = open_examples(spec, args.images)
        found.examples += part.examples
        found.labels += [c for c in part.labels if c not in found.labels]
        found.conflicting += part.conflicting
        found.unlabelled += part.unlabelled
        found.boxes_only += part.boxes_only

    from ..segmenter import get_segmenter

    seg = get_segmenter(args.checkpoint, device=args.device)
    adapter = fit_adapter(seg, found, vocab, AdaptOptions(args.frames_per_instance), source=" + ".join(args.data))
    adapter.save(out)
    carded = record_in_card(args.checkpoint, out, adapter)
    if not args.quiet:
        r = adapter.report
        with_examples = sum(1 for n in adapter.counts if n)
        pooled = ", ".join(f"{n} {how}{'es' if how == 'box' and n != 1 else '' if n == 1 or how == 'box' else 's'}"
                           for how, n in sorted(r["pooled_from"].items()))
        print(f"{r['examples']} instances, {with_examples}/{len(adapter.vocabulary)} classes with examples "
              f"(frames pooled over: {pooled}); left out: {r['conflicting_left_out']} with conflicting labels, "
              f"{r['unlabelled_left_out']} unlabelled", file=sys.stderr)
        if r["added_classes"]:
            print(f"added to the vocabulary: {', '.join(r['added_classes'])}", file=sys.stderr)
        print(f"blend weight {adapter.alpha:.2f}; leave-one-out accuracy {r['loo_accuracy_text']:.3f} (text only) "
              f"-> {r['loo_accuracy_adapted']:.3f} (adapted) in {r['seconds']:.1f}s -> {out}"
              + (f" (recorded in {args.checkpoint})" if carded else ""), file=sys.stderr)
    return 0
