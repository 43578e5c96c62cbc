"""Every core error kind maps to its own class under kiln.KilnError."""

from __future__ import annotations

import pytest

import kiln
from kiln import _native, errors


def test_every_kind_maps_to_a_distinct_subclass():
    kinds = _native.error_kinds()
    assert len(kinds) >= 16
    classes = [c for _, c in kinds]
    assert len(set(classes)) == len(classes), kinds
    for kind, name in kinds:
        cls = getattr(errors, name)
        assert cls is not kiln.KilnError
        assert issubclass(cls, kiln.KilnError)
        assert getattr(kiln, name) is cls
        assert cls.kind == kind
        with pytest.raises(cls) as info:
            _native._raise_error(kind, f"sample {kind}")
        assert type(info.value) is cls
        assert info.value.kind == kind


def test_typed_fields():
    with pytest.raises(kiln.ExecError) as info:
        _native._raise_error("exec", "last line")
    assert info.value.exit_code == 1
    assert info.value.log_tail == ["last line"]
    assert info.value.vertex == "sample vertex"
    with pytest.raises(ValueError):  # OptionError is also a ValueError
        _native._raise_error("option", "v")
    with pytest.raises(OSError):  # IoError is also an OSError
        _native._raise_error("io", "v")


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError):
        _native._raise_error("no-such-kind", "x")


def test_option_errors_from_arguments(engine):
    with pytest.raises(kiln.OptionError):
        kiln.scratch().run(["true"], network="bogus")
    with pytest.raises(kiln.OptionError):
        engine.solve(kiln.scratch(), outputs=["type=nope"])
    with pytest.raises(kiln.OptionError):
        engine.solve(kiln.scratch(), progress="fancy")


def test_definition_error_on_garbage_bytes():
    with pytest.raises(kiln.DefinitionError):
        kiln.Definition.from_bytes(b"\xff\xfenot a definition")


def test_root_in_use(tmp_path):
    with kiln.Engine(tmp_path / "r"):
        with pytest.raises(kiln.RootInUseError):
            kiln.Engine(tmp_path / "r")


def test_io_error_in_file_op_keeps_path_and_cause(engine):
    # A name longer than NAME_MAX fails with ENAMETOOLONG inside the file op's vertex task; the
    # error crosses into the dependent copy's task and still arrives as IoError with its path.
    long = "n" * 300
    made = kiln.scratch().mkdir("/d").mkfile(f"/d/{long}", "x")
    st = kiln.scratch().copy(made, "/d", "/copied")
    with pytest.raises(kiln.IoError) as info:
        engine.solve(st)
    e = info.value
    assert isinstance(e, OSError)
    assert e.kind == "io"
    assert e.path is not None and str(e.path).endswith(f"d/{long}"), e.path
    assert f"mkfile /d/{long}" in str(e)
    assert "File name too long" in str(e)
