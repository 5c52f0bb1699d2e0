"""`clipvis worker`, `clipvis submit`, `clipvis jobs status|wait|cancel ID`: the job layer's commands.

Only parses arguments and calls ``clipvis_core.jobs``. Without ``CLIPVIS_BROKER_URL`` a submitted
job runs inside this command (it waits for it); with a broker it is queued for the workers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..errors import InputError


def register(subparsers) -> None:
    w = subparsers.add_parser("worker", help="start a Celery worker that runs segmentation jobs",
                              description="Start a Celery worker for CLIPVIS_BROKER_URL (one job at a time per "
                                          "process; run one worker per GPU with CUDA_VISIBLE_DEVICES).")
    w.add_argument("--device-kind", choices=("auto", "gpu", "cpu"), default="auto",
                   help="also consume the queue of this device kind (auto: gpu when /dev/nvidia0 exists)")
    w.add_argument("--queues", metavar="Q1,Q2", help="consume exactly these queues instead")
    w.add_argument("--pool", choices=("prefork", "solo"), default="prefork",
                   help="prefork (default): the job runs in a child process and the hard time limit applies; "
                        "solo: in the worker process itself")
    w.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1: one job per GPU)")
    w.add_argument("--warmup", metavar="CHECKPOINT", help="build this model when the worker process starts")
    w.add_argument("--hostname", "-n", metavar="NAME", help="Celery node name (default clipvis-<kind>@<host>)")
    w.add_argument("--loglevel", "-l", default="info")
    w.set_defaults(func=run_worker)

    s = subparsers.add_parser("submit", help="submit a segmentation job (queued with a broker, in-process without)")
    s.add_argument("media", help="video file, frame directory or http(s) URL")
    s.add_argument("--checkpoint", required=True, metavar="NAME|CARD|PTH")
    s.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                   help='a class; repeat for more; synonyms comma-separated: --class "car, automobile"')
    s.add_argument("--vocab-file", type=Path, metavar="FILE")
    s.add_argument("--vocab", metavar="BUILTIN", help="built-in vocabulary (see `clipvis vocab list`)")
    s.add_argument("--adapter", metavar="FILE", help="classifier adapter from `clipvis adapt` (default vocabulary: its classes)")
    s.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="HTTP header for URL media, e.g. 'Authorization: Token abc'")
    for flag, field, typ in _OPTION_FLAGS:
        s.add_argument(flag, dest=field, type=typ, metavar=typ.__name__.upper())
    s.add_argument("--option", action="append", default=[], metavar="FIELD=JSON",
                   help="any other SegmentOptions field, e.g. --option detections=20")
    s.add_argument("--queue", metavar="KIND", help="gpu or cpu: only workers of that kind (default: any worker)")
    s.add_argument("--wait", action="store_true", help="wait for the result (always, without a broker)")
    s.add_argument("--output", "-o", type=Path, metavar="OUT.json", help="with --wait: copy the track JSON here")
    s.set_defaults(func=run_submit)

    j = subparsers.add_parser("jobs", help="follow or cancel a submitted job")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    st = jsub.add_parser("status", help="state and progress of a job")
    st.add_argument("id")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=run_status)
    wt = jsub.add_parser("wait", help="wait for a job and print where its result is")
    wt.add_argument("id")
    wt.add_argument("--timeout", type=float, metavar="SEC")
    wt.add_argument("--output", "-o", type=Path, metavar="OUT.json", help="copy the track JSON here")
    wt.set_defaults(func=run_wait)
    cc = jsub.add_parser("cancel", help="cancel a queued or running job")
    cc.add_argument("id")
    cc.set_defaults(func=run_cancel)


_OPTION_FLAGS = [("--stride", "frame_stride", int), ("--start", "start_time", float), ("--end", "end_time", float),
                 ("--max-frames", "max_frames", int), ("--min-size", "min_size", int), ("--max-size", "max_size", int),
                 ("--window", "window", int), ("--score-threshold", "score_threshold", float)]


def _settings():
    from ..jobs import JobSettings

    return JobSettings.from_env()


def run_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    if not settings.distributed:
        raise InputError("clipvis worker needs CLIPVIS_BROKER_URL (e.g. redis://host:6379/0); "
                         "without a broker, jobs run in-process and need no worker")
    kind = args.device_kind
    if kind == "auto":  # no CUDA call here: the parent of a prefork pool must not touch the GPU
        kind = "gpu" if os.path.exists("/dev/nvidia0") else "cpu"
    queues = args.queues or f"{settings.default_queue},{settings.queue_for(kind)}"
    if args.warmup:
        os.environ["CLIPVIS_WARMUP_CHECKPOINT"] = args.warmup
    from ..jobs.celery_app import get_app

    argv = ["worker", f"--pool={args.pool}", f"--concurrency={args.concurrency}", f"--queues={queues}",
            f"--loglevel={args.loglevel}", f"--hostname={args.hostname or f'clipvis-{kind}@%h'}"]
    if args.pool == "prefork" and args.warmup:
        # A child reports ready only after worker_process_init (the warm-up) returns.
        get_app(settings).conf.worker_proc_alive_timeout = 900
    get_app(settings).worker_main(argv)
    return 0


def _spec(args: argparse.Namespace):
    from ..builtin_vocabularies import resolve_vocabulary
    from ..jobs import JobSpec

    given = args.classes or args.vocab_file or args.vocab
    vocabulary = resolve_vocabulary(args.classes, args.vocab_file, args.vocab) if given or not args.adapter else None
    options = {field: getattr(args, field) for _, field, _ in _OPTION_FLAGS if getattr(args, field) is not None}
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--option {item!r}: write FIELD=VALUE, e.g. --option detections=20")
        try:
            options[name.strip()] = json.loads(value)
        except ValueError:
            options[name.strip()] = value
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header {item!r}: write 'Name: value', e.g. 'Authorization: Token abc'")
        headers[name.strip()] = value.strip()
    return JobSpec(media=args.media, vocabulary=list(vocabulary.entries) if vocabulary else [], checkpoint=args.checkpoint,
                   options=options, headers=headers or None, adapter=args.adapter)


def run_submit(args: argparse.Namespace) -> int:
    from ..jobs import submit

    settings = _settings()
    handle = submit(_spec(args), queue=args.queue, settings=settings)
    print(handle.id)
    sys.stdout.flush()
    if args.wait or not settings.distributed:
        return _wait(handle, None, args.output)
    return 0


def _handle(job_id: str):
    from ..jobs import JobHandle

    return JobHandle.from_id(job_id, _settings())


def _describe(st) -> str:
    if st.state == "FAILURE":
        return f"FAILURE {st.error_type}: {st.error}"
    if st.steps_total:  # a training job
        loss = f", loss {st.loss:.4f}" if st.loss is not None else ""
        return f"{st.state} step {st.step}/{st.steps_total}{loss}, {st.fps:.2f} steps/s"
    if st.result:
        return f"{st.state} {st.result}"
    if st.frames_total:
        return f"{st.state} {st.frames_done}/{st.frames_total} frames, {st.fps:.2f} frames/s"
    return st.state


def run_status(args: argparse.Namespace) -> int:
    st = _handle(args.id).status()
    print(json.dumps(st.to_dict()) if args.json else _describe(st))
    return 0


def _wait(handle, timeout: float | None, output: Path | None) -> int:
    # Progress on stderr while waiting, the result path on stdout.
    deadline = None if timeout is None else time.monotonic() + timeout
    last = ""
    while not (st := handle.status()).done:
        line = _describe(st)
        if line != last and sys.stderr.isatty():
            print(f"\r{line}   ", end="", file=sys.stderr, flush=True)
        last = line
        if deadline is not None and time.monotonic() > deadline:
            print(f"clipvis: job {handle.id} still {st.state} after {timeout:g}s", file=sys.stderr)
            return 3
        time.sleep(0.2)
    if sys.stderr.isatty() and last:
        print(file=sys.stderr)
    if st.state == "SUCCESS" and st.result:  # a training job: the trained model card
        print(st.result)
        return 0
    tracks = handle.wait(timeout=0)  # raises the job's error (InputError, JobCancelled...) as one line
    if output is not None:
        tracks.save(output.expanduser())
    print(output or handle.store.path(handle.key))
    return 0


def run_wait(args: argparse.Namespace) -> int:
    return _wait(_handle(args.id), args.timeout, args.output)


def run_cancel(args: argparse.Namespace) -> int:
    handle = _handle(args.id)
    handle.cancel()
    print(f"cancel requested for {handle.id}")
    return 0
