"""Specs are untrusted (pull requests): YAML that would hang or crash the loader is a spec error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vertex_tuner.errors import SpecError
from vertex_tuner.spec import load_spec

#: A "billion laughs": nine levels of nine aliases, 9**9 strings once expanded.
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOMB, "YAML aliases (&anchor / *alias) are not allowed in specs"),
        ("name: &n demo\ndescription: *n\n", "YAML aliases"),
        ("name: !!python/object:os.system x\n", "could not determine a constructor"),
        ("name: demo\nlabels: !custom {a: b}\n", "the YAML tag '!custom' is not allowed"),
        ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32 levels"),
    ],
)
def test_hostile_yaml_is_a_spec_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(path, environ={})
