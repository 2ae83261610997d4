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
    assert logs[-1]["notebooks"][calls[0]]["status"] == "failed"
    assert "exploded" in logs[-1]["notebooks"][calls[0]]["error"]
