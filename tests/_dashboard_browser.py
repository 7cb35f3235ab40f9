"""Headless Chromium for the dashboard tests (Debian's /usr/bin/chromium through playwright; never a
downloaded browser), and the README's screenshot:

    python -m tests._dashboard_browser demo/feats/index.html docs/dashboard.png --feature 110 --height 900 --colors 256
    python -m tests._dashboard_browser demo/feats/index.html docs/dashboard_table.png --height 640 --colors 256
"""

from __future__ import annotations

import argparse
import shutil
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


def why_no_browser() -> str | None:
    """None when the browser tests can run, else the reason they cannot."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        exe = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page opened from disk that records every console message and page error."""

    def __init__(self, b, path: Path, width: int = 1400, height: int = 900):
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = b.new_page(viewport={"width": width, "height": height})
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(Path(path).resolve().as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=60_000)

    def problems(self) -> list[str]:
        """Page errors, console errors/warnings, and any request that is not the file itself."""
        bad = [f"pageerror: {e}" for e in self.errors]
        bad += [f"console {t}: {x}" for t, x in self.console if t in ("error", "warning")]
        bad += [f"request: {u}" for u in self.requests if not u.startswith("file://")]
        return bad


def screenshot(html: Path, png: Path, feature: int | None = None, width: int = 1400, height: int = 1000):
    """The feature page of `feature` as a PNG; without one, the table sorted by density."""
    with browser() as b:
        p = Page(b, html, width, height)
        if feature is None:
            p.page.click("th[data-key='density']")
        else:
            p.page.evaluate(f"location.hash = '#feature/{feature}'")
            p.page.wait_for_selector("#top .ctx")
        p.page.screenshot(path=str(png))
        return p.problems()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--feature", type=int)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--colors", type=int, help="quantise the PNG to this many colours (a smaller file)")
    a = ap.parse_args()
    print(screenshot(a.html, a.png, a.feature, a.width, a.height) or "no console errors")
    if a.colors:
        from PIL import Image

        Image.open(a.png).convert("RGB").quantize(a.colors, dither=Image.Dither.NONE).save(
            a.png, optimize=True
        )
    print(f"{a.png}: {a.png.stat().st_size / 1e3:.0f} kB")
