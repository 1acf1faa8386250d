"""Bad input is one sentence and exit 2; anything else is a fault of ours and keeps its traceback."""

import subprocess
import sys

import pytest

from randsae.cli import main
from randsae.data import lomax
from randsae.errors import BadInput


def test_bad_input_is_one_sentence_and_exit_2(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise BadInput("the samples are not what they should be.")

    monkeypatch.setattr(lomax, "generate", refuse)
    assert main(["-q", "toy2d", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "randsae: error: the samples are not what they should be.\n"


def test_a_value_error_that_is_not_bad_input_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr(lomax, "generate", bug)
    with pytest.raises(ValueError, match="internal shape mismatch"):
        main(["-q", "toy2d", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # the directory this run made, left empty, is removed again


def test_the_command_line_exits_1_with_the_traceback_on_a_fault(tmp_path):
    code = ("import sys; from randsae.data import lomax; from randsae.cli import main\n"
            "def bug(*a, **k): raise ValueError('an internal shape mismatch')\n"
            "lomax.generate = bug\nsys.exit(main(['-q', 'toy2d', '--out', sys.argv[1]]))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "in bug" in result.stderr
