"""The HTML report in a real browser: it renders, and nothing a model wrote runs in it.

Headless Chromium loads report.html and prints the DOM it built once the page had loaded
(``--dump-dom``): the page as a browser sees it, after any script would have run. Every
payload (tests/test_eval_report.py) leaves an element with an id ``ran-…`` when it runs, and the
inline script also changes the title. A control page that holds the same payloads without the
report's escaping and policy shows that they do run there, so their absence from the report is
not an artefact of the harness; a report rendered with escaping switched off shows that the
Content-Security-Policy alone stops them.

Skipped when Chromium is not installed, except under CI (the ``CI`` variable set, as GitHub
Actions sets it), where its absence fails the tests: CI installs it (.ci/run).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_eval_report import PAYLOADS, hostile_result, ran

from vertex_tuner.evaluation import report
from vertex_tuner.evaluation.report import TrendPoint, render_html, write_report

#: Read at import: the autouse fixture removes CI from each test's environment.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false")
DEBIAN_CHROMIUM = "/usr/bin/chromium"
#: Every mark a payload leaves when it runs.
MARKS = ("script", "onerror", "onload", "frame", "breakout")


def find_chromium(path: str | None, *, in_ci: bool) -> str:
    """The browser to run, or skip (fail under CI) when there is none."""
    if path:
        return path
    if in_ci:
        pytest.fail(
            "Chromium is not installed, and under CI the browser tests must run: install the "
            "Debian package chromium first (.ci/run does)",
            pytrace=False,
        )
    pytest.skip(f"Chromium is not installed ({DEBIAN_CHROMIUM}); apt-get install chromium")


@pytest.fixture
def chromium() -> str:
    # Debian's package first; a hosted runner's Chrome takes the same flags.
    candidates = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    installed = (
        DEBIAN_CHROMIUM
        if Path(DEBIAN_CHROMIUM).exists()
        else next((found for name in candidates if (found := shutil.which(name))), None)
    )
    return find_chromium(installed, in_ci=IN_CI)


def dump_dom(chromium: str, page: Path, scratch: Path) -> str:
    """The DOM Chromium built from ``page``, serialised after the page loaded."""
    profile = scratch / "profile"
    profile.mkdir(parents=True)
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # Without these Chromium reaches for Google's servers at start-up.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Virtual time: timers and loads settle before the dump, without real waiting.
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    # Its caches and settings go to the scratch folder, not the user's home.
    env = {**os.environ, "HOME": str(scratch), "XDG_CONFIG_HOME": str(scratch / "config")}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    assert "</html>" in done.stdout, f"no DOM dumped: {done.stderr[-2000:]}"
    return done.stdout


def title(dom: str) -> str:
    found = re.search(r"<title>(.*?)</title>", dom, re.DOTALL)
    assert found is not None
    return found.group(1)


def marks(dom: str) -> set[str]:
    """The payloads that ran: the ids they left."""
    return set(re.findall(r'id="ran-(\w+)"', dom))


def test_without_chromium_the_tests_skip_but_fail_under_ci() -> None:
    assert find_chromium("/opt/chromium", in_ci=True) == "/opt/chromium"
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        find_chromium(None, in_ci=False)
    with pytest.raises(pytest.fail.Exception, match="under CI the browser tests must run"):
        find_chromium(None, in_ci=True)


def test_the_report_renders_and_no_model_output_runs(chromium: str, tmp_path: Path) -> None:
    result = hostile_result()
    history = [
        TrendPoint("r-1", "2025-12-01T00:00:00Z", {"rouge_l": 0.5}, True),
        TrendPoint(PAYLOADS[0], "2025-12-10T00:00:00Z", {"rouge_l": 0.55}, False),
    ]
    page = write_report(result, tmp_path / "report", history=history)[1]
    dom = dump_dom(chromium, page, tmp_path)
    # It rendered: the heading, the gate in words, a chart per metric with the intervals as
    # whiskers, and the trend.
    assert "<h1>Evaluation of support-tone</h1>" in dom
    assert '<h2>Gate: <span class="verdict fail">FAIL</span>' in dom
    assert '<td class="verdict fail">FAIL</td>' in dom
    assert dom.count("<svg") == len(result.metrics) + 1
    whiskers = sum(len(by_metric) for by_metric in result.comparisons.values())
    assert dom.count('<line class="whisker"') == whiskers == 5
    assert '<polyline class="trend-line"' in dom
    # Nothing ran: the title is the report's, no payload left its mark, and none became an
    # element; each is on the page as text.
    assert title(dom) == "Evaluation of support-tone"
    assert marks(dom) == set()
    for tag in ("<script", "<img", "<iframe", "<a "):
        assert tag not in dom
    assert dom.count("<style") == 1
    assert "&lt;script&gt;document.title='pwned';" in dom
    assert '&lt;iframe src="javascript:parent.' in dom


def test_the_same_payloads_run_on_a_page_without_escaping_or_policy(
    chromium: str, tmp_path: Path
) -> None:
    page = tmp_path / "control.html"
    page.write_text(
        "<!doctype html><html><head><title>control</title></head><body><h1>control</h1>"
        + " ".join(PAYLOADS)
        + "</body></html>",
        encoding="utf-8",
    )
    dom = dump_dom(chromium, page, tmp_path)
    assert title(dom) == "pwned"
    assert marks(dom) == set(MARKS)


def test_the_policy_alone_stops_them_if_escaping_failed(
    chromium: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "_esc", lambda text: text)
    page = tmp_path / "report.html"
    page.write_text(render_html(hostile_result()), encoding="utf-8")
    dom = dump_dom(chromium, page, tmp_path)
    # The payloads are markup now...
    assert f"<script>document.title='pwned';{ran('script')}</script>" in dom
    assert "<iframe" in dom
    # ... and still none of them ran.
    assert title(dom) == "Evaluation of support-tone"
    assert marks(dom) == set()
