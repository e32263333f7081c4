"""The Dagster UI in a real browser: headless Chromium (Debian's package, installed here when
missing) driven by Playwright, against a private stack that `diana-demo` filled with traffic.
The lineage shows every Diana asset and every edge of the definitions; a posteriors
materialisation shows its table and its plot. Screenshots are kept in .test-artifacts/browser.

Never skipped: without a browser that runs, these tests fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port, private_stack_environment
from diana_pipeline_tests.conftest import run_command

pytestmark = pytest.mark.servers

ARTIFACTS = Path(os.environ.get("DIANA_TEST_ARTIFACTS", REPO_ROOT / ".test-artifacts")) / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ASSET_NAME = '[class*="AssetNode_assetName"]'


def system_chromium() -> str:
    """Debian's chromium, installed with apt-get when it is missing."""
    found = shutil.which("chromium")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        result = subprocess.run(
            [*sudo, *command],
            capture_output=True,
            text=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"cannot install chromium ({' '.join(command)}): {result.stderr[-2000:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.fail("apt-get installed chromium, but no chromium is on PATH")
    return found


@pytest.fixture(scope="module")
def dagster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private stack with Dagster, after a short demo: assets materialised, checks run."""
    home = tmp_path_factory.mktemp("ui-stack")
    env = {**private_stack_environment(home, free_port), "DIANA_OUTPUT_SINK": "csv"}
    try:
        demo = run_command(
            "diana-demo",
            *("--eps", "20", "--duration", "10", "--seed", "8", "--format", "json"),
            env=env,
            timeout=600,
        )
        assert demo.returncode == 0, demo.stderr[-4000:]
        assert json.loads(demo.stdout)["tests"]
        yield f"http://127.0.0.1:{env['DIANA_DAGSTER_PORT']}"
    finally:
        run_command("diana-stack", "down", env=env, timeout=180)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = system_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        yield opened
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"))
        opened.close()


def expected_graph() -> tuple[set[str], set[tuple[str, str]]]:
    """Every asset of the definitions and every dependency edge between them."""
    from diana_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    names = {key.to_user_string() for key in graph.get_all_asset_keys()}
    edges = {
        (parent.to_user_string(), key.to_user_string())
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
    }
    return names, edges


def rendered_graph(page: Page) -> tuple[set[str], set[tuple[str, str]]]:
    """The asset nodes drawn, and each drawn edge matched to the nodes at its two ends."""
    nodes = page.evaluate(
        """(selector) => Array.from(document.querySelectorAll('foreignObject'))
            .filter(f => f.querySelector(selector))
            .map(f => ({name: f.querySelector(selector).innerText.trim(),
                        x: +f.getAttribute('x'), y: +f.getAttribute('y'),
                        w: +f.getAttribute('width'), h: +f.getAttribute('height')}))""",
        ASSET_NAME,
    )
    paths = page.evaluate(
        "() => Array.from(document.querySelectorAll('path[marker-end]'))"
        ".map(p => p.getAttribute('d'))"
    )

    def node_at(x: float, y: float, side: str) -> str:
        for node in nodes:
            edge_x = node["x"] + node["w"] if side == "right" else node["x"]
            if abs(edge_x - x) <= 12 and node["y"] <= y <= node["y"] + node["h"]:
                return node["name"]
        raise AssertionError(f"an edge ends at ({x}, {y}), on no node: {nodes}")

    edges = set()
    for d in paths:
        numbers = [
            float(n) for n in d.replace("M", " ").replace("C", " ").replace(",", " ").split()
        ]
        (x0, y0), (x1, y1) = numbers[:2], numbers[-2:]
        edges.add((node_at(x0, y0, "right"), node_at(x1, y1, "left")))
    return {n["name"] for n in nodes}, edges


def test_lineage_shows_every_asset_and_its_edges(dagster_url: str, page: Page) -> None:
    names, edges = expected_graph()
    assert {"events", "posteriors", "published_posteriors"} <= names
    # Every asset is within three steps of posteriors: the whole graph in one view.
    page.goto(
        f"{dagster_url}/assets/posteriors?view=lineage&lineageScope=neighbors&lineageDepth=3",
        wait_until="networkidle",
    )
    page.locator(ASSET_NAME).first.wait_for(timeout=60_000)
    page.wait_for_function(
        f"() => document.querySelectorAll('{ASSET_NAME}').length >= {len(names)}", timeout=60_000
    )
    # Edges are drawn after the layout settles: wait until every one of them is there.
    page.wait_for_function(
        f"() => document.querySelectorAll('path[marker-end]').length >= {len(edges)}",
        timeout=60_000,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "lineage.png"))
    drawn_names, drawn_edges = rendered_graph(page)
    assert drawn_names == names
    assert drawn_edges == edges


def test_a_materialisation_shows_its_table_and_plot(dagster_url: str, page: Page) -> None:
    page.goto(f"{dagster_url}/assets/posteriors?view=events", wait_until="networkidle")
    table = page.locator("table", has_text="prob_best").last
    table.wait_for(timeout=60_000)
    headers = table.locator("th").all_inner_texts()
    assert {"test_id", "variant", "mean", "ci_low", "ci_high", "prob_best"} <= set(headers)
    assert table.locator("td", has_text="treatment").count() >= 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "materialisation-table.png"), full_page=True)
    page.get_by_text("[Show Markdown]").first.click()
    plot = page.locator('img[src^="data:image/png"]').first
    plot.wait_for(timeout=30_000)
    width, height, complete = page.evaluate(
        "(img) => [img.naturalWidth, img.naturalHeight, img.complete]", plot.element_handle()
    )
    assert complete and width >= 400 and height >= 150
    page.screenshot(path=str(ARTIFACTS / "materialisation-plot.png"))
