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


def test_a_sigterm_inside_the_import_machinery_is_kept_for_the_next_loop_not_lost():
    """Python ignores an exception raised in the import machinery's callbacks: a SIGTERM that lands there is
    noted, and the next long loop's check raises it (a toy run once went on training after such a SIGTERM)."""
    import sys
    import types

    import pytest

    from randsae import errors

    importing = types.SimpleNamespace(f_code=types.SimpleNamespace(co_filename="<frozen importlib._bootstrap>"))
    try:
        errors.check_terminated()  # nothing asked yet
        errors.request_termination(importing)  # noted, not raised
        with pytest.raises(errors.Terminated):
            errors.check_terminated()
        with pytest.raises(errors.Terminated):  # anywhere else: raised where it lands
            errors.request_termination(sys._getframe())
    finally:
        errors._termination["requested"] = False
