"""Every numbered notebook executes on the smoke profile, and what it saves is checked."""

import json

import pandas as pd
import pytest

import run_all

pytestmark = pytest.mark.notebooks  # the session fixture `smoke_reports` (conftest.py) runs them once


def test_every_notebook_rendered(smoke_reports):
    log = json.loads((smoke_reports / "run_log.json").read_text())
    for nb in run_all.numbered_notebooks():
        assert log["notebooks"][nb.stem]["status"] == "ok"
        assert (smoke_reports / f"{nb.stem}.html").stat().st_size > 10_000
    index = (smoke_reports / "index.html").read_text()
    assert all(nb.stem in index for nb in run_all.numbered_notebooks())


def test_eda_flags_planted_geometry_shortcut(smoke_reports):
    probe = json.loads((smoke_reports / "tables" / "eda_shortcut_probe.json").read_text())
    # The embedded smoke build plants the geometry shortcut (real rectangular, fakes square).
    assert probe["flagged"] is True
    assert probe["auc_ci_low"] > 0.6
    counts = pd.read_csv(smoke_reports / "tables" / "eda_counts.csv")
    assert set(counts["cls"]) == {"real", "fake"}


def test_preprocessing_saves_normalisation_and_sound_splits(smoke_reports):
    norm = json.loads((smoke_reports / "tables" / "normalization.json").read_text())
    assert len(norm["real_train"]["mean"]) == 3 and all(0 < m < 1 for m in norm["real_train"]["mean"])
    rates = pd.read_csv(smoke_reports / "tables" / "face_detection_rates.csv")
    assert rates["rate"].between(0, 1).all()


def test_eda_reports_difficulty_probe(smoke_reports):
    probe = pd.read_csv(smoke_reports / "tables" / "eda_difficulty_probe.csv")
    assert len(probe) == 1 and 0.0 <= probe.at[0, "test_auc"] <= 1.0 and probe.at[0, "test_n"] > 0


def test_phase1_tables(smoke_reports):
    folds = pd.read_csv(smoke_reports / "tables" / "phase1_folds.csv")
    assert set(folds["model"]) == {"simple_cnn", "resnet18"}
    assert folds.groupby("model")["fold"].nunique().eq(folds["fold"].nunique()).all()  # identical folds per model
    summary = pd.read_csv(smoke_reports / "tables" / "phase1_summary.csv")
    auc = summary[summary["metric"] == "auc"]
    assert (auc["ci_low"] <= auc["mean"]).all() and (auc["mean"] <= auc["ci_high"]).all()
    for model, group in folds.groupby("model"):
        assert auc.set_index("model").at[model, "mean"] == pytest.approx(group["test_auc"].mean())
    tests = pd.read_csv(smoke_reports / "tables" / "phase1_tests.csv")
    assert set(tests["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    conclusions = json.loads((smoke_reports / "tables" / "phase1_conclusions.json").read_text())
    assert len(conclusions["run_keys"]) == len(folds)


def test_runs_a_notebook_trained_are_in_its_mlflow_experiment(smoke_reports):
    from mlflow import MlflowClient

    from lib.training import tracking

    folds = pd.read_csv(smoke_reports / "tables" / "phase1_folds.csv")
    client = MlflowClient(tracking_uri=tracking.default_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    logged = {r.data.tags["run_key"]: r for r in client.search_runs(experiments)} if experiments else {}
    trained = folds.loc[folds["trained"], "run_key"]  # runs loaded from the store were logged when trained
    if len(trained):  # a warm store trains nothing; CI's fresh clone trains every run
        ours = client.get_experiment_by_name("smoke/03_phase1_baselines").experiment_id
        assert all(logged[key].info.experiment_id == ours for key in trained)  # 03 trains them before 05 runs
        assert all("test_auc" in logged[key].data.metrics for key in trained)


def test_reports_hold_no_progress_bars_or_stderr_noise(smoke_reports):
    for nb in run_all.numbered_notebooks():
        executed = json.loads((smoke_reports / nb.name).read_text())
        stderr = ["".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", [])
                  if o.get("name") == "stderr"]
        assert stderr == [], f"{nb.stem} prints to stderr: {stderr[:2]}"
        widgets = [o for c in executed["cells"] for o in c.get("outputs", [])
                   if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert widgets == [], f"{nb.stem} renders progress widgets: {widgets[:1]}"
        html = (smoke_reports / f"{nb.stem}.html").read_text()
        assert "it/s]" not in html and "TqdmWarning" not in html and "IProgress" not in html


def test_reader_reports_have_no_code(smoke_reports):
    for nb in run_all.numbered_notebooks():
        reader = (smoke_reports / f"{nb.stem}.reader.html").read_text()
        full = (smoke_reports / f"{nb.stem}.html").read_text()
        code = 'class="jp-CodeMirrorEditor'  # a code cell's input block
        assert code in full and code not in reader
        assert "jp-OutputArea" in reader


def test_index_dashboard_in_a_browser(smoke_reports):
    from tests.report.browser import rendered_dom, unresolved_links

    page = smoke_reports / "index.html"
    dom = rendered_dom(page)
    notebooks = {t["data-notebook"] for t in dom.select("table.headline")}
    assert notebooks == {nb.stem for nb in run_all.numbered_notebooks()}, "a headline table per notebook"
    assert dom.select_one("#dashboard img") is not None and dom.select_one("#dataset table") is not None
    images = dom.find_all("img")
    assert images and all(img.get("data-loaded") == "yes" for img in images), \
        [img["src"] for img in images if img.get("data-loaded") != "yes"]
    assert unresolved_links(page, dom) == []
    links = {a["href"] for a in dom.find_all("a", href=True)}
    assert {f"{nb.stem}.html" for nb in run_all.numbered_notebooks()} <= links
    assert {f"{nb.stem}.reader.html" for nb in run_all.numbered_notebooks()} <= links
