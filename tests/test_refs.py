"""The one model-reference grammar (registry and server): good refs, bad refs, clear messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from visionloop.errors import ValidationError
from visionloop.registry.refs import ModelRef, parse_ref


@pytest.mark.parametrize(
    ("text", "name", "version", "alias", "slot"),
    [
        ("shapes", "shapes", None, "champion", "shapes"),
        ("shapes/5", "shapes", "5", None, "shapes"),
        ("my-model.v2/03", "my-model.v2", "3", None, "my-model.v2"),
        ("shapes@champion", "shapes", None, "champion", "shapes"),
        ("shapes@latest", "shapes", None, "latest", "shapes"),
        ("shapes@my_alias-2", "shapes", None, "my_alias-2", "shapes"),
        ("models:/shapes/5", "shapes", "5", None, "shapes"),
        ("models:/shapes@challenger", "shapes", None, "challenger", "shapes"),
        ("models:/shapes", "shapes", None, "champion", "shapes"),
        ("big=shapes/5", "shapes", "5", None, "big"),
        ("big=models:/shapes@champion", "shapes", None, "champion", "big"),
        ("  shapes/7  ", "shapes", "7", None, "shapes"),
    ],
)
def test_registry_refs(text, name, version, alias, slot):
    r = parse_ref(text)
    assert (r.kind, r.name, r.version, r.alias, r.path, r.slot) == ("registry", name, version, alias, None, slot)
    assert ModelRef.parse(text) == r


def test_normal_form():
    assert str(parse_ref("shapes")) == "shapes@champion"
    assert str(parse_ref("models:/shapes/05")) == "shapes/5"
    assert str(parse_ref("x=shapes@latest")) == "shapes@latest"


def test_file_refs(tmp_path):
    onnx = tmp_path / "best.onnx"
    r = parse_ref(str(onnx))  # an .onnx path is a file even before it exists
    assert (r.kind, r.path, r.slot, r.version, r.alias) == ("file", onnx, "best", None, None)
    assert str(r) == str(onnx)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    assert (parse_ref(str(other)).kind, parse_ref(str(other)).slot) == ("file", "weights")  # any existing file
    renamed = parse_ref(f"shapes={onnx}")
    assert (renamed.kind, renamed.slot, renamed.path) == ("file", "shapes", onnx)


def test_missing_non_onnx_path_is_a_registry_name(tmp_path):
    with pytest.raises(ValidationError, match="bad model reference"):
        parse_ref(str(tmp_path / "nope.bin"))  # not a file, and '/' makes it no valid registry ref either


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shapes/abc", "the version after '/' must be a number"),
        ("shapes/", "the version after '/' must be a number"),
        ("/5", "expected NAME, NAME/5, NAME@alias"),
        ("@champion", "expected NAME, NAME/5, NAME@alias"),
        ("shapes@", "the alias after '@' must be"),
        ("shapes@a@b", "the alias after '@' must be"),
        ("a/b/3", "expected NAME, NAME/5, NAME@alias"),
        ("not a model!", "expected NAME, NAME/5, NAME@alias"),
        ("", "expected NAME"),
        ("models:/", "expected NAME"),
    ],
)
def test_bad_refs(text, message):
    with pytest.raises(ValidationError, match="bad model reference") as exc:
        parse_ref(text)
    assert message in str(exc.value) and repr(text) in str(exc.value)


def test_bad_slot_names(tmp_path):
    with pytest.raises(ValidationError, match="bad model name 'my model'"):
        parse_ref(str(tmp_path / "my model.onnx"))  # the default slot is the stem


def test_registry_only(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="a registered model is expected here, not a file"):
        parse_ref("best.onnx", files=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes").write_bytes(b"x")
    assert parse_ref("shapes").kind == "file"  # an existing file wins where files are allowed...
    assert parse_ref("shapes", files=False).kind == "registry"  # ...and is ignored where they are not


def test_at_version():
    r = parse_ref("big=shapes@champion").at_version("07")
    assert (r.name, r.version, r.alias, r.slot) == ("shapes", "7", None, "big")
    with pytest.raises(ValidationError, match="bad version"):
        parse_ref("shapes").at_version("x")
    with pytest.raises(ValidationError, match="served from a file"):
        parse_ref("best.onnx").at_version("3")


def test_parsing_imports_no_mlflow():
    code = ("import sys; import visionloop.registry, visionloop.serving.sources; "
            "assert 'mlflow' not in sys.modules, 'mlflow imported'; "
            "assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert r.returncode == 0, r.stderr
