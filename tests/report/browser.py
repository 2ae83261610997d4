"""Headless Chromium for the index page's tests: load a page as a reader's browser would, return the DOM."""

import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium on this machine (apt-get install chromium; .ci/run installs it)")


def rendered_dom(page: Path):
    """The page's DOM after load (scripts run, images fetched), parsed with BeautifulSoup."""
    from bs4 import BeautifulSoup

    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
    return BeautifulSoup(done.stdout, "html.parser")


def unresolved_links(page: Path, dom) -> list[str]:
    """Local links and images of the page whose target file does not exist."""
    targets = [a["href"] for a in dom.find_all("a", href=True)] + [img["src"] for img in dom.find_all("img", src=True)]
    local = [t for t in targets if "://" not in t and not t.startswith(("#", "mailto:"))]
    return [t for t in local if not (page.parent / t.split("#")[0]).exists()]
