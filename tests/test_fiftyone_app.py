"""The real FiftyOne App in headless Chromium (Playwright, Debian's /usr/bin/chromium), clicked as a user
would: operator browser (backtick), the segment form run in the background, the clipvis runs panel's
progress, labels in the video modal without a reload, streamed progress of an in-operator run, the
evaluation metrics and the novel-categories view opening on its first run.

One App (started by `clipvis fiftyone app`) and one browser page serve the whole module; the tests run
in file order on that page. Screenshots are kept in artifacts/fiftyone/.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests

from test_fiftyone_env import (  # noqa: F401  (fixtures)
    HEIGHT, OP_PREFIX, ROOT, WIDTH, fo_session, free_port, make_video_dataset, small_card, wait_port,
)
from videogen import shape_frames, write_video

pytestmark = pytest.mark.e2e
SHOTS = ROOT / "artifacts" / "fiftyone"
OPERATORS = ("segment_video_instances", "find_novel_categories", "evaluate_video_instances", "learn_from_corrections")
FRAMES = 8
LOAD_S = 180_000  # ms: the App's first page load takes 1-2 minutes on a busy 2-core machine
# The in-operator run's progress label, and a page script recording each one the App renders.
PROGRESS_RE = r"\d/3 samples - app\d\.mp4: frame [1-9]\d*/\d"
RECORD_PROGRESS = """(pattern) => {
    const re = new RegExp(pattern), seen = window.__clipvisProgress = [];
    const look = (node) => {
        const m = node && node.textContent && node.textContent.match(re);
        if (m && seen[seen.length - 1] !== m[0]) seen.push(m[0]);
    };
    new MutationObserver((records) => records.forEach((r) => look(r.target)))
        .observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def app_dataset(fo_session, tmp_path_factory):
    """Three H.264 clips (the App's player decodes them) with exact GT and a 'hand' predictions field
    (the GT with confidences: its AP is 100, so the metrics on screen are known)."""
    import fiftyone as fo

    d = tmp_path_factory.mktemp("app-clips")
    clips = [(write_video(d / f"app{k}.mp4", f, fps=10.0, codec="h264"), f)
             for k, f in enumerate(shape_frames(FRAMES, HEIGHT, WIDTH, seed=20 + s) for s in range(3))]
    ds = make_video_dataset(f"clipvis-app-{uuid.uuid4().hex[:8]}", clips, gt_field="gt")
    for sample in ds:
        for frame in sample.frames.values():
            frame["hand"] = fo.Detections(detections=[fo.Detection(label=g.label, bounding_box=g.bounding_box,
                                                                   mask=g.mask, index=g.index, confidence=0.9)
                                                      for g in frame.gt.detections])
        sample.save()
    ds.persistent = True  # the App server and the worker are other processes
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def app(fo_session, app_dataset, tmp_path_factory):
    """`clipvis fiftyone app DATASET` (links the plugin, sets the App's environment), headless."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("app-log") / "app.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "clipvis_core", "fiftyone", "app", app_dataset.name, "--port", str(port),
                             "--address", "127.0.0.1", "--remote", "--plugins-dir", str(fo_session.plugins_dir)],
                            cwd=ROOT, env=fo_session.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, 180, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def page(app, app_dataset):
    from playwright.sync_api import sync_playwright

    assert os.path.exists("/usr/bin/chromium"), "Debian's chromium is required: apt-get install chromium"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1300})
        pg.goto(f"{app}/datasets/{app_dataset.name}", timeout=LOAD_S)
        pg.wait_for_selector("[data-cy=looker]", timeout=LOAD_S)
        dismiss = pg.get_by_role("button", name="Dismiss")  # the "Explore Enterprise" pop-up
        if dismiss.count():
            dismiss.first.click()
        yield pg
        browser.close()


def wait_for(pg, check, timeout: float, what: str, shot: str | None = None):
    """Poll ``check()`` until it returns a truthy value (returned); screenshot on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pg.screenshot(path=str(SHOTS / (shot or "failure.png")))
    raise AssertionError(f"{what} not seen after {timeout:.0f}s (screenshot {shot or 'failure.png'})")


def open_operator(pg, query: str, title: str) -> None:
    search = pg.get_by_placeholder("Search operations by name...")

    def press_backtick():
        # The key must reach the App (not a field), and may be lost while the App re-renders after a
        # reload: press it again until the operator browser is open.
        if not search.count():
            pg.evaluate("document.activeElement && document.activeElement.blur()")
            pg.keyboard.press("Backquote")
            pg.wait_for_timeout(1000)
        return search.count()

    wait_for(pg, press_backtick, 60, "the operator browser", "fiftyone_open_operator.png")
    pg.keyboard.type(query)
    pg.wait_for_timeout(500)
    pg.keyboard.press("Enter")
    wait_for(pg, lambda: pg.get_by_text(title).count(), 60, f"the form {title!r}", "fiftyone_open_operator.png")


def execute_button(pg):
    return pg.get_by_role("button", name="Execute", exact=True)


def fill_suggest(pg, index: int, value: str) -> None:
    """An autocomplete field of the form (typed values are allowed)."""
    box = pg.get_by_placeholder("Type or select a value").nth(index)
    box.click()
    box.fill(value)
    pg.keyboard.press("Enter")
    pg.keyboard.press("Tab")


def test_app_lists_the_operators_with_their_run_modes(app, app_dataset):
    listed = requests.post(f"{app}/operators", json={"dataset_name": app_dataset.name}, timeout=120).json()
    uris = {o["uri"]: o for o in listed["operators"]}
    for op in OPERATORS:
        assert OP_PREFIX + op in uris, f"{op} not listed by the App server: {listed['errors'][:1]}"
    seg = uris[OP_PREFIX + "segment_video_instances"]["config"]
    assert seg["execute_as_generator"] and not seg["default_choice_to_delegated"]
    opts = requests.post(f"{app}/operators/resolve-execution-options", timeout=60, json={
        "operator_uri": OP_PREFIX + "segment_video_instances", "dataset_name": app_dataset.name,
        "params": {"run_mode": "background"}}).json()
    assert opts["allow_immediate_execution"] and not opts["allow_delegated_execution"]


def test_background_run_from_the_form_shows_progress_in_the_panel_and_labels_in_the_modal(page, small_card, ref_dir):
    pg = page
    open_operator(pg, "segment video", "Segment video instances (clipvis)")
    background = pg.get_by_role("radio", name=re.compile("In the background"))
    assert background.is_checked(), "the background run mode is the form's default"
    classes = pg.locator("textarea:visible").first
    classes.click()
    for i, line in enumerate(["disc", "rectangle, box", "square"]):
        if i:
            pg.keyboard.press("Enter")  # a real multi-line field: Enter starts a new class
        pg.keyboard.type(line)
    assert classes.input_value() == "disc\nrectangle, box\nsquare"
    # A .pth of no released architecture: the form says so and Execute stays disabled.
    fill_suggest(pg, 0, str(ref_dir / "tiny_model.pth"))
    wait_for(pg, lambda: pg.get_by_text("does not match any released CLIP-VIS architecture").count(), 60,
             "the architecture error in the form", "fiftyone_form_error.png")
    assert not execute_button(pg).is_enabled()
    pg.screenshot(path=str(SHOTS / "fiftyone_form_error.png"))
    fill_suggest(pg, 0, str(small_card))
    wait_for(pg, lambda: execute_button(pg).is_enabled(), 60, "Execute enabled with the model card")
    pg.screenshot(path=str(SHOTS / "fiftyone_segment_form.png"))
    execute_button(pg).click()

    # Execute returns at once with where to look; the panel opens and follows the run.
    wait_for(pg, lambda: pg.get_by_text("Background run").count(), 60, "the queued-run output")
    pg.get_by_role("button", name="Done").click()
    panel_text = lambda: " ".join(pg.locator("text=/\\d+\\/3 samples, \\d+ tracks/").all_inner_texts())  # noqa: E731
    def progress_or_done():
        text = panel_text()
        return re.search(r"running: \d/3 samples.*frame [1-9]\d*/8", text) or re.search(r"completed: 3/3", text)

    # Per-frame progress while it runs; an idle machine may finish the 3 short clips before the
    # panel's first refresh (progress itself is asserted in tests/test_fiftyone_runs.py).
    seen = wait_for(pg, progress_or_done, 180, "progress in the clipvis runs panel", "fiftyone_panel_progress.png")
    pg.screenshot(path=str(SHOTS / "fiftyone_panel_progress.png"))
    print(f"\npanel: {seen.group(0)}")
    # A running run offers Cancel (unless it finished between the two looks: the panel re-renders).
    assert pg.get_by_role("button", name="Cancel").count() or "completed" in panel_text(), seen.group(0)
    wait_for(pg, lambda: "completed: 3/3 samples" in panel_text(), 240, "the run completing", "fiftyone_panel_done.png")
    # No reload by the user: the panel reloaded the dataset, the new field is in the sidebar.
    wait_for(pg, lambda: pg.locator("[data-cy='sidebar-field-frames.clipvis']").count(), 30,
             "frames.clipvis in the sidebar", "fiftyone_panel_done.png")
    pg.screenshot(path=str(SHOTS / "fiftyone_panel_done.png"))

    pg.locator("[data-cy=looker]").first.click(position={"x": 60, "y": 60})
    modal = pg.locator("[data-cy=modal]")
    modal.wait_for(timeout=60_000)
    entry = modal.locator("[data-cy='sidebar-field-frames.clipvis']")
    wait_for(pg, lambda: entry.count(), 30, "frames.clipvis in the modal", "fiftyone_modal_labels.png")
    pg.wait_for_timeout(3000)  # the first frame and its overlays
    pg.screenshot(path=str(SHOTS / "fiftyone_modal_labels.png"))
    count = modal.locator("[data-cy='sidebar-field-container-frames.clipvis']").inner_text()
    assert re.search(r"\d", count), count
    pg.keyboard.press("Escape")


def test_in_operator_run_streams_its_progress(page):
    pg = page
    open_operator(pg, "segment video", "Segment video instances (clipvis)")
    # The form remembers the last run's values on this dataset.
    assert pg.locator("textarea:visible").first.input_value() == "disc\nrectangle, box\nsquare"
    pg.get_by_role("radio", name=re.compile("In this operator run")).check()
    pg.locator("input[value='clipvis']").fill("stride2")
    pg.locator("input[value='1']").last.fill("2")  # frame stride: new jobs, not the stored results
    pg.keyboard.press("Tab")
    wait_for(pg, lambda: execute_button(pg).is_enabled(), 60, "Execute enabled")
    # Every progress label the App renders is recorded as it appears: an idle machine runs the 3 short
    # clips in a few seconds, between two polls of the page.
    pg.evaluate(RECORD_PROGRESS, PROGRESS_RE)
    execute_button(pg).click()
    def summary_shown():
        if pg.get_by_text(re.compile(PROGRESS_RE)).count():  # a screenshot of it when a poll sees it
            pg.screenshot(path=str(SHOTS / "fiftyone_immediate_progress.png"))
        return pg.get_by_text("Samples segmented").count()

    wait_for(pg, summary_shown, 240, "the run's summary", "fiftyone_immediate_progress.png")
    seen = pg.evaluate("window.__clipvisProgress")
    print(f"\nprogress labels rendered: {seen}")
    assert seen, "no progress label was rendered while the in-operator run ran"
    pg.get_by_role("button", name="Done").click()


def type_classes_and_execute(pg, choice: str, classes: str) -> None:
    """Pick the form's class-list option ``choice``, type ``classes`` in its box, then Execute."""
    pg.get_by_text(choice).click()
    box = pg.locator("textarea:visible").first
    box.wait_for(timeout=30_000)
    box.fill(classes)
    pg.keyboard.press("Tab")
    wait_for(pg, lambda: execute_button(pg).is_enabled(), 60, "Execute enabled")
    execute_button(pg).click()


def test_evaluation_metrics_are_shown(page):
    pg = page
    open_operator(pg, "evaluate video", "Evaluate video instances (clipvis)")
    fill_suggest(pg, 0, "hand")
    fill_suggest(pg, 1, "gt")
    type_classes_and_execute(pg, "Base = a list of classes", "disc\nsquare")
    wait_for(pg, lambda: pg.get_by_text("Metric (x100)").count(), 120, "the metrics table", "fiftyone_evaluation.png")
    pg.screenshot(path=str(SHOTS / "fiftyone_evaluation.png"))
    rows = {r.locator("td").first.inner_text(): [c.inner_text() for c in r.locator("td").all()[1:]]
            for r in pg.locator("tr").all() if r.locator("td").count()}
    assert set(rows) == {"AP", "AP50", "AP75", "AR1", "AR10"}, rows
    assert rows["AP"] == ["100.0", "100.0", "100.0"], rows  # all / base / novel of exact predictions
    pg.get_by_role("button", name="Close").click()


def test_novel_categories_view_opens_on_its_first_run(page, app_dataset):
    pg = page
    open_operator(pg, "novel", "Find novel categories (clipvis)")
    fill_suggest(pg, 0, "clipvis")
    type_classes_and_execute(pg, "A list of classes", "rectangle")
    wait_for(pg, lambda: pg.get_by_text("Samples tagged").count(), 120, "the novelty summary", "fiftyone_novel_view.png")
    app_dataset.reload()
    tagged = len(app_dataset.load_saved_view("clipvis novel categories"))
    assert tagged > 0, "the tiny model names classes outside {rectangle} on some clips"
    # The App switched to the new view (no 'saved view does not exist' error): its stages are in the
    # view bar and the grid holds the tagged samples only.
    wait_for(pg, lambda: pg.locator("[data-cy=looker]").count() == tagged, 60, "the grid showing the view")
    assert not pg.get_by_text("does not exist").count()
    pg.get_by_role("button", name="Close").click()
    pg.screenshot(path=str(SHOTS / "fiftyone_novel_view.png"))
    assert pg.get_by_text("clipvis_novel").count(), "the view's tag stage shows in the view bar"
