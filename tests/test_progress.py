"""Progress bars: TQDM_DISABLE (set by run_all.py for the notebook kernels) wins over disable=False."""

from lib.progress import tqdm


def test_environment_turns_bars_off_even_when_a_caller_enables_them(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert tqdm(range(2), disable=False).disable is False
    assert tqdm(range(2), disable=True).disable is True
    for value in ("1", "true", "yes"):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert tqdm(range(2), disable=False).disable is True
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert tqdm(range(2), disable=False).disable is False
