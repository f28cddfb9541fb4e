"""The notebooks as a reader sees them, in headless Chromium (Debian's `chromium` via Playwright).

1. The rollout browser in a real JupyterLab: starts JupyterLab on a free port over a temporary folder holding
   `02_inspect_rollouts.ipynb` (its `run` set to a copy of a real tiny run), opens the notebook, runs all cells from the
   Run menu, waits for the widget, moves the step slider with the keyboard and picks another group in the dropdown,
   and checks that the view follows.
2. The demo-style report: notebook 01's HTML report (the smoke run of its defaults) opened as a file, where the
   accuracy-by-count chart, the reward / KL / entropy curves and the rollout gallery must be visible images under
   their sections; then the executed notebook opened in the same JupyterLab, where the same figures must render.

Screenshots go to `test-output/browser/` (gitignored); their paths are printed.

Needs /usr/bin/chromium (`tests/setup_browser.sh` installs it) and the `playwright` Python package (its driver only;
`playwright install` is never used). Without them the test is skipped with the reason.
"""

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from reports import figures_in_report

pytest_plugins = ["runs_fixture"]  # tiny_run: a real tiny run folder; smoke_project: notebook 01 run with defaults

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("MMR1KIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "test-output" / "browser"
LAB_SETTINGS = {  # start the notebook's kernel without asking; every cell in the page; no news pop-up over it
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def wait_for(predicate, timeout: float):
    """Poll `predicate()` until it is truthy, or raise `TimeoutError` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready within {timeout} s")
        time.sleep(0.25)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_notebook(tiny_run, folder: Path) -> Path:
    """A copy of notebook 02 whose `run` default is a copy of the tiny run, as a user would edit it."""
    run = folder / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    nb = nbformat.read(ROOT / "notebooks" / "02_inspect_rollouts.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, n = re.subn(r'^run: str = "[^"]*"', f"run: str = {json.dumps(str(run))}", cell.source,
                             flags=re.MULTILINE)
    assert n == 1
    path = folder / "02_inspect_rollouts.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    """(url base, token, folder): a JupyterLab server over a fresh `lab` folder with fresh settings, shared by the
    tests of this module (each opens its own notebook); shut down after."""
    tmp_path = tmp_path_factory.mktemp("jupyter")
    folder, token, port = tmp_path / "lab", secrets.token_hex(16), free_port()
    folder.mkdir()
    for name, values in LAB_SETTINGS.items():
        path = tmp_path / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    jupyter = Path(sys.executable).with_name("jupyter")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    with open(tmp_path / "jupyter.log", "w") as log:  # the server keeps its own copy of the file descriptor
        proc = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", f"--ServerApp.token={token}", "--ServerApp.ip=127.0.0.1",
             f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={folder}",
             "--LabApp.news_url=", *(["--allow-root"] if os.geteuid() == 0 else [])],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({proc.returncode}): {(tmp_path / 'jupyter.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=60)
        yield base, token, folder
    finally:
        try:  # shuts the kernels down too
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
            proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def chromium_page(sync_api, failure_shot: Path):
    """A page of headless Chromium (1400x1000); a full-page screenshot to `failure_shot` when the block fails."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        try:
            yield page
        except Exception:
            page.screenshot(path=str(failure_shot), full_page=True)
            raise
        finally:
            browser.close()


@pytest.fixture
def sync_api():
    """Playwright's sync API, once Chromium and the driver are known to be there (checked before JupyterLab starts)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (tests/setup_browser.sh installs Debian's chromium with apt-get)")
    return pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


@pytest.mark.browser
@pytest.mark.slow
def test_rollout_browser_in_jupyterlab(sync_api, tiny_run, jupyter_lab):
    base, token, folder = jupyter_lab
    notebook = lab_notebook(tiny_run, folder)
    shot = SCREENSHOTS / "02_inspect_rollouts.png"

    sync_api.expect.set_options(timeout=30_000)  # a widget update renders a figure in a kernel on a busy CPU
    with chromium_page(sync_api, SCREENSHOTS / "02_inspect_rollouts-failure.png") as page:
        page.goto(f"{base}/lab/tree/{notebook.name}?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        sync_api.expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle").first).to_be_visible()
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item:not(.lm-mod-disabled)", has_text=re.compile(r"^Run All Cells")).click()
        sync_api.expect(page.locator(".jp-InputPrompt", has_text=re.compile(r"\[[*\d]+\]")).first).to_be_visible()

        view = page.locator(".widget-html .mmr1-header")  # the browser's view, not the static gallery
        sync_api.expect(view).to_contain_text("step 1 · group 0", timeout=120_000)
        # Let Run All finish (the gallery cells keep the kernel busy) before driving the widget.
        sync_api.expect(page.locator(".jp-InputPrompt", has_text="[*]")).to_have_count(0, timeout=120_000)
        sync_api.expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle").first).to_be_visible()
        status = page.locator(".widget-html", has_text=re.compile(r"^step \d+: \d+ of")).first
        sync_api.expect(status).to_contain_text("step 1:")
        assert page.locator(".widget-html img.mmr1-figure").count() == 1  # the image with its boxes

        # Move the step slider with the keyboard, as a user would.
        page.locator(".widget-slider .noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        sync_api.expect(view).to_contain_text("step 2 · group 0")
        sync_api.expect(status).to_contain_text("step 2:")
        sync_api.expect(page.locator(".widget-html .mmr1-completions").first).to_be_visible()

        # Another group of that step from the dropdown.
        page.locator(".widget-dropdown select").first.select_option(index=1)
        sync_api.expect(view).to_contain_text("step 2 · group 1")

        # Filter to zero-variance groups: the status says so.
        page.locator(".widget-toggle-buttons button", has_text="zero variance").click()
        sync_api.expect(status).to_contain_text("(zero variance)")
        view.first.scroll_into_view_if_needed()
        page.screenshot(path=str(shot), full_page=False)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


# notebook 01's figures: (saved file, the report section it belongs under)
DEMO_FIGURES = {
    "accuracy_by_count.png": "6 · After GRPO",
    "rewards.png": "7 · Training curves",
    "kl.png": "7 · Training curves",
    "entropy.png": "7 · Training curves",
    "rollouts_last_step.png": "8 · Rollouts of the last step",
}
# the <h2> before an element in document order, and whether the browser decoded and laid out the image
SECTION_OF = """img => { let last = null;
  for (const h of document.querySelectorAll('h2'))
    if (h.compareDocumentPosition(img) & Node.DOCUMENT_POSITION_FOLLOWING) last = h;
  return last ? last.textContent.replace(/¶/g, '').trim() : null; }"""
DRAWN = "img => img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 200"
LAB_IMAGES = "() => [...document.querySelectorAll('.jp-OutputArea-output img')].map(i => i.src)"


@pytest.mark.browser
@pytest.mark.slow
def test_demo_report_and_notebook_show_their_figures(sync_api, smoke_project, jupyter_lab):
    run_dir = smoke_project.run_dir
    html = run_dir / "01_train_grpo.html"
    shown = figures_in_report(html, run_dir)  # saved PNG -> index of the report image with the same pixels
    assert set(shown) == set(DEMO_FIGURES)
    base, token, folder = jupyter_lab
    shutil.copy(run_dir / "01_train_grpo.ipynb", folder / "01_train_grpo.ipynb")  # executed: outputs included

    with chromium_page(sync_api, SCREENSHOTS / "01_report-failure.png") as page:
        # 1. The HTML report, as a file: each figure decoded, laid out and visible under its section.
        page.goto(html.as_uri())
        images = page.locator("img[src^='data:image']")
        for name, section in DEMO_FIGURES.items():
            image = images.nth(shown[name])
            image.scroll_into_view_if_needed()
            sync_api.expect(image).to_be_visible()
            assert image.evaluate(DRAWN), f"{name} is not drawn in the report"
            assert image.evaluate(SECTION_OF) == section, name
            image.screenshot(path=str(SCREENSHOTS / f"01_report_{name}"))
        page.screenshot(path=str(SCREENSHOTS / "01_report.png"), full_page=True)

        # 2. The executed notebook in JupyterLab: the same figures render as cell outputs.
        page.goto(f"{base}/lab/tree/01_train_grpo.ipynb?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        outputs = page.locator(".jp-OutputArea-output img")
        sync_api.expect(outputs).to_have_count(len(DEMO_FIGURES) + 1, timeout=60_000)  # + the sample image
        sources = page.evaluate(LAB_IMAGES)
        saved = {base64.b64encode((run_dir / name).read_bytes()).decode(): name for name in DEMO_FIGURES}
        in_lab = {saved[src.split(",", 1)[1]]: i for i, src in enumerate(sources) if src.split(",", 1)[1] in saved}
        assert set(in_lab) == set(DEMO_FIGURES)
        for name, i in in_lab.items():
            outputs.nth(i).scroll_into_view_if_needed()
            sync_api.expect(outputs.nth(i)).to_be_visible()
            assert outputs.nth(i).evaluate(DRAWN), f"{name} is not drawn in JupyterLab"
        outputs.nth(in_lab["rewards.png"]).scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "01_jupyterlab_curves.png"))
    print(f"screenshots: {SCREENSHOTS}/01_report*.png, 01_jupyterlab_curves.png")
