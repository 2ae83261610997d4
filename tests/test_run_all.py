from pathlib import Path

import pytest

import run_all
from lib.config import ParamsError


def test_select_by_number_and_name():
    nbs = [Path("01_eda.ipynb"), Path("02_preprocessing.ipynb"), Path("03_phase1_baselines.ipynb")]
    assert run_all.select(nbs, "01,03") == [nbs[0], nbs[2]]
    assert run_all.select(nbs, "02_preprocessing") == [nbs[1]]
    assert run_all.select(nbs, None) == nbs
    with pytest.raises(SystemExit, match="09"):
        run_all.select(nbs, "09")


def test_params_error_stops_before_executing(monkeypatch, capsys):
    executed = []

    def bad(nb, profile, cli):
        raise ParamsError("params/smoke/01_eda.yaml sets bogus")

    monkeypatch.setattr(run_all, "resolve_parameters", bad)
    monkeypatch.setattr(run_all, "run_notebook", lambda *a: executed.append(a))
    assert run_all.main(["--profile", "smoke", "--only", "01"]) == 2
    assert executed == []
    assert "bogus" in capsys.readouterr().err


def test_failure_names_the_report_and_stops(monkeypatch, capsys, tmp_path):
    calls = []

    def fail(nb, out, parameters):
        calls.append(nb.stem)
        raise RuntimeError("cell 3 exploded")

    monkeypatch.setattr(run_all, "run_notebook", fail)
    monkeypatch.setattr(run_all, "report_dir", lambda profile: tmp_path)
    monkeypatch.setattr(run_all, "load_run_log", lambda profile: {"notebooks": {}})
    logs = []
    monkeypatch.setattr(run_all, "save_run_log", lambda profile, log: logs.append(log))
    monkeypatch.setattr(run_all, "build_index", lambda profile: tmp_path / "index.html")
    assert run_all.main(["--profile", "smoke", "--no-html"]) == 1
    assert len(calls) == 1  # stopped at the first failure
    err = capsys.readouterr().err
    assert "FAILED" in err and calls[0] in err
    assert "RuntimeError: cell 3 exploded" in err and "partial report" in err  # the error itself, on the console
    assert logs[-1]["notebooks"][calls[0]]["status"] == "failed"
    assert "exploded" in logs[-1]["notebooks"][calls[0]]["error"]


def test_set_values_are_typed_and_checked_against_the_notebooks(monkeypatch, capsys):
    nbs = run_all.select(run_all.numbered_notebooks(), "01,08")
    sets = run_all.parse_sets(["epochs=3", "external_root=/data/other", "scales=[0.25, 0.5]", "lr=0.5"], nbs)
    assert sets == {"epochs": 3, "external_root": "/data/other", "scales": [0.25, 0.5], "lr": 0.5}
    with pytest.raises(ParamsError, match="no_such_key"):
        run_all.parse_sets(["no_such_key=1"], nbs)
    with pytest.raises(ParamsError, match="key=value"):
        run_all.parse_sets(["epochs"], nbs)

    executed = []
    monkeypatch.setattr(run_all, "run_notebook", lambda *a: executed.append(a))
    assert run_all.main(["--profile", "smoke", "--only", "01", "--set", "epochs=three"]) == 2  # wrong type
    assert "epochs" in capsys.readouterr().err and executed == []


def test_set_value_reaches_the_notebook(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(run_all, "run_notebook", lambda nb, out, parameters: seen.update(parameters))
    monkeypatch.setattr(run_all, "report_dir", lambda profile: tmp_path)
    monkeypatch.setattr(run_all, "load_run_log", lambda profile: {"notebooks": {}})
    monkeypatch.setattr(run_all, "save_run_log", lambda profile, log: None)
    monkeypatch.setattr(run_all, "build_index", lambda profile: tmp_path / "index.html")
    assert run_all.main(["--profile", "smoke", "--only", "08", "--no-html", "--set", "external_root=/data/x"]) == 0
    assert seen["external_root"] == "/data/x"


def test_error_type_and_message_of_the_failing_cell():
    class CellError(Exception):  # what papermill raises: the cell's exception name and value as attributes
        ename, evalue = "ManifestError", "the dataset has one class only (real); a detector needs both"

    assert run_all.describe_error(CellError("long traceback ...")) == (
        "ManifestError: the dataset has one class only (real); a detector needs both")
    assert run_all.describe_error(RuntimeError("line 1\ncell 3 exploded")) == "RuntimeError: cell 3 exploded"
