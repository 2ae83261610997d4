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
