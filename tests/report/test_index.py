import pandas as pd

from lib.report import index as report


def test_index_lists_notebooks_and_headlines(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "report_dir", lambda profile: (tmp_path / profile).mkdir(exist_ok=True) or tmp_path / profile)
    fig = tmp_path / "p" / "figures" / "f.png"
    fig.parent.mkdir(parents=True)
    fig.write_bytes(b"png")
    report.save_headline("p", "01_eda", pd.DataFrame({"model": ["a"], "auc": [0.81234]}), title="EDA",
                         conclusions=["computed line"], figures=[fig])
    report.save_run_log("p", {"profile": "p", "notebooks": {"01_eda": {"status": "ok", "seconds": 3.0},
                                                          "02_x": {"status": "failed", "seconds": 1.0, "error": "boom"}}})
    page = report.build_index("p").read_text()
    assert "01_eda.html" in page and "computed line" in page and "0.8123" in page
    assert "figures/f.png" in page and "failed" in page and "boom" in page


def test_index_in_a_browser_finds_tables_and_marks_broken_images(tmp_path, monkeypatch):
    from tests.report.browser import rendered_dom, unresolved_links

    monkeypatch.setattr(report, "report_dir", lambda profile: (tmp_path / profile).mkdir(exist_ok=True) or tmp_path / profile)
    out = tmp_path / "p"
    (out / "figures").mkdir(parents=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(out / "figures" / "good.png")
    plt.close(fig)
    report.save_run_log("p", {"notebooks": {"01_eda": {"status": "ok", "seconds": 1.0}}})
    (out / "01_eda.html").write_text("<html></html>")
    report.save_headline("p", "01_eda", pd.DataFrame({"model": ["a"], "auc": [0.9]}), title="EDA",
                         figures=[out / "figures" / "good.png", out / "figures" / "missing.png"])
    page = report.build_index("p")
    dom = rendered_dom(page)
    tables = dom.select("table.headline")
    assert len(tables) == 1 and tables[0]["data-notebook"] == "01_eda" and "0.9" in tables[0].get_text()
    loaded = {img["src"]: img.get("data-loaded") for img in dom.find_all("img")}
    assert loaded == {"figures/good.png": "yes", "figures/missing.png": "no"}
    assert dom.body["data-broken-images"] == "1"
    assert unresolved_links(page, dom) == ["figures/missing.png"]
