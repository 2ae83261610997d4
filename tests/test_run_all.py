import time
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
    assert run_all.main(["--profile", "smoke", "--no-html", "--jobs", "1"]) == 1
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
    _fake_store(monkeypatch, tmp_path)
    assert run_all.main(["--profile", "smoke", "--only", "08", "--no-html", "--set", "external_root=/data/x"]) == 0
    assert seen["external_root"] == "/data/x"


def test_error_type_and_message_of_the_failing_cell():
    class CellError(Exception):  # what papermill raises: the cell's exception name and value as attributes
        ename, evalue = "ManifestError", "the dataset has one class only (real); a detector needs both"

    assert run_all.describe_error(CellError("long traceback ...")) == (
        "ManifestError: the dataset has one class only (real); a detector needs both")
    assert run_all.describe_error(RuntimeError("line 1\ncell 3 exploded")) == "RuntimeError: cell 3 exploded"


def _fake_store(monkeypatch, tmp_path):
    monkeypatch.setattr(run_all, "report_dir", lambda profile: tmp_path)
    monkeypatch.setattr(run_all, "load_run_log", lambda profile: {"notebooks": {}})
    monkeypatch.setattr(run_all, "save_run_log", lambda profile, log: None)
    monkeypatch.setattr(run_all, "build_index", lambda profile: tmp_path / "index.html")


def test_prerequisites_follow_needs_and_default_to_every_earlier_notebook():
    nbs = [Path(f"{n}_x.ipynb") for n in ("01", "02", "03", "04", "08", "12")]
    needs = run_all.prerequisites(nbs)
    assert needs["01"] == set() and needs["03"] == set() and needs["04"] == {"02", "03"} and needs["08"] == set()
    assert needs["12"] == {"01", "02", "03", "04", "08"}  # a new (unlisted) notebook waits for all before it
    assert run_all.prerequisites([Path("04_x.ipynb"), Path("05_x.ipynb")]) == {"04": set(), "05": {"04"}}
    # most waited on first (02 and 03: 04 and 12), ties by number
    assert run_all.start_order(needs) == ["02", "03", "01", "04", "08", "12"]
    assert run_all.prerequisites([Path(f"{n}_x.ipynb") for n in ("06", "08", "10")])["10"] == {"06", "08"}
    full = run_all.prerequisites(run_all.numbered_notebooks())
    assert run_all.start_order(full)[:2] == ["02", "03"] and set(run_all.start_order(full)[-4:]) == {"07", "09", "10", "11"}


def test_notebooks_run_side_by_side_only_once_their_inputs_are_done(monkeypatch, tmp_path):
    import threading

    lock, events, active, peak = threading.Lock(), [], [0], [0]

    def fake(nb, out, parameters):
        with lock:
            events.append(("start", nb.stem[:2]))
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
            events.append(("end", nb.stem[:2]))

    monkeypatch.setattr(run_all, "run_notebook", fake)
    _fake_store(monkeypatch, tmp_path)
    assert run_all.main(["--profile", "smoke", "--no-html", "--jobs", "2"]) == 0
    assert peak[0] == 2  # two at a time, never more
    order = {event: i for i, event in enumerate(events)}
    for number, needs in run_all.prerequisites(run_all.numbered_notebooks()).items():
        assert all(order[("end", n)] < order[("start", number)] for n in needs), number

    events.clear(), peak.__setitem__(0, 0)
    assert run_all.main(["--profile", "smoke", "--no-html", "--jobs", "1"]) == 0
    assert peak[0] == 1 and len(events) == 2 * len(run_all.numbered_notebooks())


def test_a_failure_lets_running_notebooks_finish_and_starts_no_dependent(monkeypatch, capsys, tmp_path):
    started = []

    def fake(nb, out, parameters):
        started.append(nb.stem[:2])
        if nb.stem.startswith("03"):
            raise RuntimeError("phase 1 exploded")
        time.sleep(0.3)

    monkeypatch.setattr(run_all, "run_notebook", fake)
    _fake_store(monkeypatch, tmp_path)
    assert run_all.main(["--profile", "smoke", "--no-html", "--jobs", "2"]) == 1
    assert "03" in started and not {"04", "05", "06", "07"} & set(started)
    err = capsys.readouterr().err
    assert "RuntimeError: phase 1 exploded" in err and "not run:" in err and "04_phase2_preprocessing" in err


def test_notebooks_side_by_side_share_the_cores_between_their_workers(monkeypatch, tmp_path):
    from lib.executors import ENV_WORKERS

    monkeypatch.setattr(run_all, "run_notebook", lambda *a: None)
    monkeypatch.setattr(run_all.os, "cpu_count", lambda: 8)
    _fake_store(monkeypatch, tmp_path)
    for argv, expected in ((["--jobs", "2"], "4"), (["--jobs", "1"], "8"), (["--jobs", "3"], "2"),
                           (["--jobs", "2", "--workers", "3"], "3")):
        monkeypatch.delenv(ENV_WORKERS, raising=False)
        assert run_all.main(["--profile", "default", "--only", "01", "--no-html", *argv]) == 0
        assert run_all.os.environ[ENV_WORKERS] == expected, argv
    monkeypatch.setenv(ENV_WORKERS, "5")  # a value the user exported is kept
    assert run_all.main(["--profile", "default", "--only", "01", "--no-html"]) == 0
    assert run_all.os.environ[ENV_WORKERS] == "5"
