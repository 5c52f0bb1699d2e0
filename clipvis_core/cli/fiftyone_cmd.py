"""``clipvis fiftyone install|check|app``: make the FiftyOne plugin visible, prove that it loads, start the App.

The plugin is the repository itself (``fiftyone.yml`` at its root, code in ``plugin/``): install
links it into FiftyOne's plugins directory, so edits take effect without re-installing.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ClipvisError, InputError

PLUGIN_NAME = "@clipvis/clipvis"
LINK_NAME = "clipvis"
OPERATORS = ("segment_video_instances", "find_novel_categories", "evaluate_video_instances", "learn_from_corrections")
REPO_ROOT = Path(__file__).resolve().parents[2]


def register(subparsers) -> None:
    p = subparsers.add_parser("fiftyone", help="install / check the FiftyOne plugin")
    sub = p.add_subparsers(dest="fiftyone_command", required=True)
    inst = sub.add_parser("install", help="link the plugin into FiftyOne's plugins dir, then check it loads")
    inst.add_argument("--plugins-dir", help="default: FIFTYONE_PLUGINS_DIR / fiftyone's config plugins_dir")
    inst.add_argument("--force", action="store_true", help="replace a link that points elsewhere")
    inst.set_defaults(func=run_install)
    chk = sub.add_parser("check", help="load the plugin in a fresh FiftyOne process and list its operators")
    chk.add_argument("--plugins-dir", help="default: FIFTYONE_PLUGINS_DIR / fiftyone's config plugins_dir")
    chk.set_defaults(func=run_check)
    app = sub.add_parser("app", help="start the FiftyOne App on a dataset with the plugin and what the run mode needs")
    app.add_argument("dataset", help="the dataset to open")
    app.add_argument("--port", type=int, default=5151)
    app.add_argument("--address", default="localhost", help="address to serve on (0.0.0.0 for other machines)")
    app.add_argument("--remote", action="store_true", help="do not open a browser here (connect to http://ADDRESS:PORT)")
    app.add_argument("--delegated", action="store_true",
                     help="also allow Schedule (delegated runs): sets FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true and runs "
                          "`fiftyone delegated launch` beside the App. Background runs need neither")
    app.add_argument("--plugins-dir", help="default: FIFTYONE_PLUGINS_DIR / fiftyone's config plugins_dir")
    app.set_defaults(func=run_app)


def plugins_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser().resolve()
    try:
        import fiftyone as fo
    except ModuleNotFoundError:
        raise InputError("fiftyone is not installed: pip install 'clipvis[fiftyone]'") from None
    if not fo.config.plugins_dir:
        raise InputError("FiftyOne has no plugins dir: set FIFTYONE_PLUGINS_DIR or pass --plugins-dir")
    return Path(fo.config.plugins_dir).expanduser().resolve()


def plugin_source() -> Path:
    if not (REPO_ROOT / "fiftyone.yml").is_file() or not (REPO_ROOT / "plugin" / "__init__.py").is_file():
        raise ClipvisError(f"{REPO_ROOT} holds no fiftyone.yml + plugin/: install clipvis from a source checkout (pip install -e .)")
    return REPO_ROOT


def install(target_dir: Path, force: bool = False) -> Path:
    """Create ``<plugins dir>/clipvis`` -> the checkout; idempotent."""
    src = plugin_source()
    target_dir.mkdir(parents=True, exist_ok=True)
    link = target_dir / LINK_NAME
    if link.is_symlink():
        if link.resolve() == src:
            return link
        if not force:
            raise InputError(f"{link} already links to {link.resolve()}: pass --force to point it at {src}")
        link.unlink()
    elif link.exists():
        raise InputError(f"{link} exists and is not a link: move it away, then run clipvis fiftyone install again")
    link.symlink_to(src, target_is_directory=True)
    return link


# Run in a fresh interpreter: the check must see what the App and `fiftyone delegated launch` see.
_CHECK_SCRIPT = """
import json, sys
import fiftyone.plugins as fop
from fiftyone.operators.registry import OperatorRegistry
names = [p.name for p in fop.list_plugins()]
reg = OperatorRegistry()
ops = sorted(o.uri for o in reg.list_operators(builtin=False))
print(json.dumps({"plugins": names, "operators": ops, "errors": [str(e) for e in reg.list_errors()]}))
"""


def check(target_dir: Path) -> list[str]:
    """URIs of the plugin's operators as a fresh FiftyOne process loads them; raises if any is missing."""
    import json

    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=str(target_dir))
    # Run outside the checkout: from its root, `clipvis_core` would import even when it is not installed.
    proc = subprocess.run([sys.executable, "-c", _CHECK_SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise ClipvisError(f"FiftyOne failed to start: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if PLUGIN_NAME not in info["plugins"]:
        raise ClipvisError(f"FiftyOne does not see {PLUGIN_NAME} in {target_dir}: run clipvis fiftyone install")
    want = [f"{PLUGIN_NAME}/{op}" for op in OPERATORS]
    missing = [u for u in want if u not in info["operators"]]
    if missing:
        errors = [e for e in info["errors"] if "clipvis" in e]
        last = errors[0].strip().splitlines()[-1] if errors else "no error reported"
        raise ClipvisError(f"plugin found but operators did not load ({', '.join(missing)}): {last}")
    return want


def run_install(args: argparse.Namespace) -> int:
    target = plugins_dir(args.plugins_dir)
    link = install(target, args.force)
    print(f"linked {link} -> {link.resolve()}")
    for uri in check(target):
        print(f"  ok  {uri}")
    if not os.environ.get("FIFTYONE_PLUGINS_DIR") and args.plugins_dir:
        print(f"note: FiftyOne reads plugins from FIFTYONE_PLUGINS_DIR; export FIFTYONE_PLUGINS_DIR={target}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    for uri in check(plugins_dir(args.plugins_dir)):
        print(f"  ok  {uri}")
    return 0


def app_env(target: Path, delegated: bool) -> dict:
    """The App's environment: our plugins dir, the checkout importable by FiftyOne's server (and so by
    the background worker it starts), and the orchestrator flag only when delegated runs are wanted."""
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=str(target))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    if delegated:
        env["FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS"] = "true"
    return env


def run_app(args: argparse.Namespace) -> int:
    import fiftyone as fo

    if not fo.dataset_exists(args.dataset):
        have = ", ".join(sorted(fo.list_datasets())[:10]) or "none"
        raise InputError(f"no FiftyOne dataset {args.dataset!r} (datasets: {have}); create it first, e.g. "
                         "fiftyone.Dataset.from_dir(...) with persistent=True")
    target = plugins_dir(args.plugins_dir)
    install(target)  # idempotent: a link to this checkout
    env = app_env(target, args.delegated)
    cli = Path(sys.executable).with_name("fiftyone")
    cmd = [str(cli), "app", "launch", args.dataset, "-p", str(args.port), "-A", args.address, "-w", "-1"]
    if args.remote:
        cmd.append("--remote")
    print(f"FiftyOne App: http://{args.address}:{args.port}/datasets/{args.dataset}  (plugins: {target})", flush=True)
    print("  background runs: choose 'Run: in the background' in Segment video instances; a clipvis worker starts "
          "on the first run and the 'clipvis runs' panel shows progress", flush=True)
    launcher = None
    if args.delegated:
        print("  delegated runs: Schedule is enabled; this command runs `fiftyone delegated launch` to execute them",
              flush=True)
        launcher = subprocess.Popen([str(cli), "delegated", "launch"], env=env)
    app = subprocess.Popen(cmd, env=env)
    try:
        return app.wait()
    finally:
        for proc in (app, launcher):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
