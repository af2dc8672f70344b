"""Library errors name parameters, never CLI flags; the CLI spells the same message with flags.

The library sits below ``cli/`` and cannot know its flag spellings, so a message marks each
parameter with :func:`emolens.errors.arg`. These tests keep flag wording from coming back into
the library and show both spellings of one message.
"""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

from emolens.cli.options import PARAM_FLAGS, flag_of
from emolens.errors import EmolensError, arg

SRC = Path(__file__).resolve().parents[1] / "src" / "emolens"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: Flags of other programs' commands that an error may quote verbatim.
FOREIGN_COMMANDS = {"--no-deps": "pip install", "--head": "ray start"}


def _library_modules() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py")) if "cli" not in p.relative_to(SRC).parts]


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_no_library_string_names_a_cli_flag():
    found = []
    for path in _library_modules():
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                for flag in FLAG.findall(node.value):
                    if flag not in FOREIGN_COMMANDS:
                        found.append(f"{path.relative_to(SRC)}:{node.lineno}: {flag}")
    assert not found, "library strings name CLI flags; use emolens.errors.arg:\n" + "\n".join(found)


def test_the_scan_catches_a_flag_in_an_error():
    tree = ast.parse('raise EmolensError("bad", "pass --batch-size 1 or more")')
    texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert any(FLAG.search(t) for t in texts) and not FLAG.search("x-->y or a--b")


def test_every_parameter_a_library_error_names_has_a_flag():
    names = set()
    for path in _library_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "arg" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
    assert len(names) > 15  # the scan sees the call sites
    assert names <= set(PARAM_FLAGS), sorted(names - set(PARAM_FLAGS))


def test_python_reads_parameters_and_the_cli_reads_flags():
    err = EmolensError(f"{arg('batch_size', 0)} is not positive", f"pass {arg('batch_size', 1)} or more")
    assert str(err) == "batch_size=0 is not positive: pass batch_size=1 or more"
    assert err.render(flag_of) == "--batch-size 0 is not positive: pass --batch-size 1 or more"
    assert err.params == ("batch_size", "batch_size")
    switch = EmolensError("no readout", f"extract with {arg('readout', True)} or {arg('items', 'all')}")
    assert str(switch) == "no readout: extract with readout=True or items='all'"
    assert switch.render(flag_of) == "no readout: extract with --readout or --items all"
    listed = EmolensError("bad", f"pass {arg('positions', (-1, -2))}, not {arg('layers')}")
    assert listed.render(flag_of) == "bad: pass --positions -1,-2, not --layers"
    unmapped = EmolensError(f"{arg('not_a_flag', 3)} is wrong")
    assert unmapped.render(flag_of) == str(unmapped) == "not_a_flag=3 is wrong"  # no flag: Python spelling
    again = pickle.loads(pickle.dumps(err))  # Ray ships errors between processes
    assert str(again) == str(err) and again.render(flag_of) == err.render(flag_of)


def test_a_library_call_names_the_parameter(tiny_llama, tmp_path):
    from emolens.activations.extract import extract
    from emolens.data.loading import load_dataset

    with pytest.raises(EmolensError) as info:
        extract(tiny_llama, load_dataset("stimuli"), tmp_path / "s", batch_size=0)
    assert str(info.value).startswith("batch_size=0 and chunk_size=256 must be positive")
    assert "--" not in str(info.value)


def test_the_cli_renders_a_library_error_with_flags(run_cli, tmp_path):
    code, _, err = run_cli(["readout", "--model", "tiny:llama", "--data", str(tmp_path / "nope.csv"),
                            "--out", str(tmp_path / "r")])
    assert code == 2 and err.count("\n") == 1
    assert err.strip().endswith("check the path or pass --data stimuli") and "data='stimuli'" not in err
