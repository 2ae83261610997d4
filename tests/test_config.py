import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lib.config import ParamsError, resolve_parameters, type_matches


def make_notebook(path, source):
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=[cell, new_code_cell("print(seed)")], metadata={"kernelspec": kernelspec}), path)
    return path


@pytest.fixture
def params_tree(tmp_path):
    (tmp_path / "params" / "smoke").mkdir(parents=True)
    (tmp_path / "params" / "shared.yaml").write_text("seed: 42\nlr: 0.0001\nbatch_size: 32\n")
    nb = make_notebook(tmp_path / "01_demo.ipynb",
                       'profile: str = "x"  # profile\nseed: int = 1  # seed\nlr: float = 0.1  # learning rate\ndata_root: str = ""\n')
    return tmp_path, nb


def test_shared_keys_filtered_and_overridden(params_tree):
    root, nb = params_tree
    (root / "params" / "smoke" / "01_demo.yaml").write_text("lr: 0.5\n")
    values = resolve_parameters(nb, "smoke", {"data_root": "/data", "layout": "cifake"}, params_dir=root / "params")
    # batch_size is not declared by the notebook, so it is not injected; layout neither.
    assert values == {"seed": 42, "lr": 0.5, "profile": "smoke", "data_root": "/data"}


def test_unknown_key_is_refused(params_tree):
    root, nb = params_tree
    (root / "params" / "smoke" / "01_demo.yaml").write_text("learning_rate: 0.5\n")
    with pytest.raises(ParamsError, match="learning_rate"):
        resolve_parameters(nb, "smoke", params_dir=root / "params")


def test_wrong_type_is_refused(params_tree):
    root, nb = params_tree
    (root / "params" / "smoke" / "01_demo.yaml").write_text("seed: forty-two\n")
    with pytest.raises(ParamsError, match="seed.*int"):
        resolve_parameters(nb, "smoke", params_dir=root / "params")


def test_unknown_profile(params_tree):
    root, nb = params_tree
    with pytest.raises(ParamsError, match="unknown profile"):
        resolve_parameters(nb, "huge", params_dir=root / "params")


@pytest.mark.parametrize("value,type_name,ok", [
    (1, "int", True), (True, "int", False), (1, "float", True), ("a", "float", False),
    ([1, 2], "list[float]", True), (None, "str | None", True), ("x", "str | None", True), ({"a": 1}, "dict", True),
])
def test_type_matches(value, type_name, ok):
    assert type_matches(value, type_name) is ok
