"""Rendering a page in headless Chromium for tests: JavaScript errors collected, legends and tables measured.

:func:`render_dom` loads a page with an error collector injected and returns its DOM (:func:`collected_errors`
reads the errors back); :func:`render_in_frame` loads it in an iframe narrower than a window can be, with a planted
script such as :data:`LAYOUT_CHECK`, whose findings :func:`layout_check` reads.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium")

# Injected first in <head>: records uncaught errors, unhandled rejections and console.error
# into <pre id="js-errors"> so that --dump-dom shows them.
ERROR_COLLECTOR = """<script>
window.__jsErrors = [];
function __recordJsError(message) {
  window.__jsErrors.push(String(message));
  var sink = document.getElementById("js-errors");
  if (sink) { sink.textContent = JSON.stringify(window.__jsErrors); }
}
window.addEventListener("error", function (e) { __recordJsError("error: " + (e.message || e.type)); }, true);
window.addEventListener("unhandledrejection", function (e) {
  __recordJsError("rejection: " + (e.reason && e.reason.message ? e.reason.message : e.reason));
});
var __consoleError = console.error;
console.error = function () {
  __recordJsError("console.error: " + Array.prototype.join.call(arguments, " "));
  return __consoleError.apply(console, arguments);
};
document.addEventListener("DOMContentLoaded", function () {
  var sink = document.createElement("pre");
  sink.id = "js-errors";
  sink.textContent = JSON.stringify(window.__jsErrors);
  document.body.appendChild(sink);
});
</script>"""


def instrument(page: Path, tmp_path: Path, planted: str = "") -> Path:
    """A copy of ``page`` beside it with the error collector (and ``planted`` script), so relative links still work."""
    text = page.read_text(encoding="utf-8")
    before_body_end, _, after = text.replace("<head>", "<head>" + ERROR_COLLECTOR, 1).rpartition("</body>")
    target = page.parent / f"instrumented-{page.stem}.html"
    target.write_text(before_body_end + planted + "</body>" + after, encoding="utf-8")
    return target


def chromium_dom(target: Path, tmp_path: Path, window: str = "1400,3000", *flags: str) -> str:
    completed = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={window}",
            "--virtual-time-budget=10000",
            *flags,
            "--dump-dom",
            target.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def render_dom(page: Path, tmp_path: Path, planted: str = "") -> str:
    """Load ``page`` with the error collector (and ``planted`` script) in headless Chromium; return the DOM."""
    return chromium_dom(instrument(page, tmp_path, planted), tmp_path)


def render_in_frame(page: Path, tmp_path: Path, width: int, planted: str) -> str:
    """Load ``page`` in a ``width``-px iframe (narrower than a browser window can be); the DOM with the frame's
    ``#js-errors`` and ``#layout-check`` copied out."""
    inner = instrument(page, tmp_path, planted)
    frame = page.parent / f"frame-{page.stem}.html"
    frame.write_text(
        f"<!DOCTYPE html><html><body><iframe src='{inner.name}' style='width:{width}px;height:2500px;border:0'></iframe>"
        "<script>var tries = 0; function poll() { tries++; var d = null;"
        " try { d = document.querySelector('iframe').contentDocument; } catch (e) {}"
        " var done = d && d.getElementById('layout-check');"
        " if (done || tries > 60) { ['js-errors', 'layout-check'].forEach(function (id) {"
        "  var p = document.createElement('pre'); p.id = id; var source = d && d.getElementById(id);"
        "  p.textContent = source ? source.textContent : 'null'; document.body.appendChild(p); }); }"
        " else { setTimeout(poll, 250); } } setTimeout(poll, 250);</script></body></html>",
        encoding="utf-8",
    )
    return chromium_dom(frame, tmp_path, "700,2600", "--allow-file-access-from-files")


# Planted at the end of a page: after the figures settle, records per figure its legend entries and whether each
# lies inside the legend's box, the box inside the figure and the window, and whether the legend scrolls; and per
# scrolling container whether its content is wider than it.
LAYOUT_CHECK = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  function inside(a, b) { return a.top >= b.top - 1 && a.bottom <= b.bottom + 1 && a.left >= b.left - 1 && a.right <= b.right + 1; }
  var view = document.documentElement.clientWidth, figures = [], wide = [];
  document.querySelectorAll(".js-plotly-plot").forEach(function (div) {
    var legend = div.querySelector("g.legend");
    if (!legend) { figures.push({id: div.id, entries: []}); return; }
    var box = legend.querySelector("rect.bg").getBoundingClientRect();
    var svg = div.querySelector("svg.main-svg").getBoundingClientRect();
    var entries = Array.prototype.map.call(legend.querySelectorAll("g.traces"), function (entry) {
      return {name: entry.querySelector("text.legendtext").textContent,
              inside: inside(entry.querySelector("text.legendtext").getBoundingClientRect(), box)};
    });
    var bar = legend.querySelector("rect.scrollbar");
    figures.push({id: div.id, entries: entries, in_figure: inside(box, svg), in_window: box.left >= 0 && box.right <= view + 1,
                  scrolls: bar ? Number(bar.getAttribute("height") || 0) > 0 : false});
  });
  document.querySelectorAll(".scroll").forEach(function (el) {
    var inner = el.querySelector("table, svg") || el;
    if (el.scrollWidth > el.clientWidth + 1) { wide.push(inner.id || String(inner.className.baseVal || inner.className)); }
  });
  var sink = document.createElement("pre");
  sink.id = "layout-check";
  sink.textContent = JSON.stringify({figures: figures, wide_tables: wide, page_wider: document.documentElement.scrollWidth > view + 1});
  document.body.appendChild(sink);
}, 1500); });
</script>"""


def layout_check(dom: str) -> dict:
    match = re.search(r'<pre id="layout-check">(.*?)</pre>', dom, re.DOTALL)
    assert match, "the layout check did not run"
    return json.loads(html.unescape(match.group(1)))


def collected_errors(dom: str) -> list[str]:
    match = re.search(r'<pre id="js-errors">(.*?)</pre>', dom, re.DOTALL)
    assert match, "the error collector did not run"
    return json.loads(html.unescape(match.group(1)))
