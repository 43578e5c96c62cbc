"""The .pyi stubs list exactly the native module's public names and members."""

from __future__ import annotations

import ast
import inspect
import pathlib

import kiln
from kiln import _native

STUB = pathlib.Path(kiln.__file__).with_name("_native.pyi")


def stub_names():
    tree = ast.parse(STUB.read_text())
    top, classes = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "") == "TypedDict" for b in node.bases):
            continue  # the generated option dicts (kiln-gen) are typing-only, not native classes
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            classes[node.name] = {
                n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    return top, classes


def public(names):
    return {n for n in names if not n.startswith("__") or n in ("__enter__", "__exit__", "__len__", "__init__")}


def test_stub_files_ship():
    assert STUB.is_file()
    assert STUB.with_name("py.typed").is_file()


def test_module_names_match():
    top, _ = stub_names()
    top = {n for n in top if not n.startswith("_") or n in ("_raise_error", "_SolveTask", "_BuildTask")} | {"__version__"}
    native = {n for n in dir(_native) if not n.startswith("__")} | {"__version__"}
    assert native == top


def test_class_members_match():
    _, classes = stub_names()
    for name, members in classes.items():
        cls = getattr(_native, name)
        native = public(n for n, _ in inspect.getmembers(cls) if not n.startswith("_") or n in (
            "__enter__", "__exit__", "__len__"))
        if name == "Engine":
            native.add("__init__")  # __new__ in Rust, __init__ in the stub
        assert native == members, f"{name}: native {sorted(native ^ members)} differ"


def test_package_reexports_everything():
    top, _ = stub_names()
    for n in top:
        if not n.startswith("_"):
            assert hasattr(kiln, n), n


def test_option_dicts_match_the_native_readers():
    """Every generated option dict is what the native call accepts: an unknown key is refused."""
    tree = ast.parse(STUB.read_text())
    dicts = {n.name: [f.target.id for f in n.body if isinstance(f, ast.AnnAssign)]
             for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Options")}
    assert "_MkdirOptions" in dicts and "make_parents" in dicts["_MkdirOptions"]
    import pytest
    with pytest.raises(kiln.OptionError) as info:
        kiln.scratch().mkdir("/a", make_parent=True)
    assert info.value.key == "make_parent" and "make_parents" in str(info.value)
    with pytest.raises(kiln.OptionError) as info:
        kiln.scratch().mkdir("/a", mode="0755")
    assert info.value.key == "mode" and "int" in str(info.value)
