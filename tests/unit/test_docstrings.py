"""
Every public function documents how it is called, as salt's own modules do: an execution function or a runner
function a ``CLI Example:``, a state function a YAML example (``.. code-block:: yaml``).
"""

import ast

import pytest

from tests.support.paths import REPO

WANTED = {"_modules": "CLI Example:", "_runners": "CLI Example:", "_states": ".. code-block:: yaml"}


def public_functions():
    for directory, marker in WANTED.items():
        for path in sorted((REPO / directory).glob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                    yield pytest.param(node, marker, id=f"{directory}/{path.stem}.{node.name}")


@pytest.mark.parametrize(("function", "marker"), list(public_functions()))
def test_public_function_shows_how_it_is_called(function, marker):
    assert marker in (ast.get_docstring(function) or ""), f"{function.name}: no {marker!r} in its docstring"
