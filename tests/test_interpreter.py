"""Which interpreters oxloop runs on: a clear ImportError everywhere else, before native code.

`import oxloop` on a CPython version outside the verified list, or on a free-threaded build,
must raise ImportError naming the running and the supported versions (so the common
``try: import oxloop / except ImportError`` falls back to asyncio), unless
OXLOOP_ALLOW_UNSUPPORTED_PYTHON=1. The running interpreter is faked in a child process by
replacing ``sys.version_info`` / ``sys.abiflags`` before the import.

The extension itself declares that it needs the GIL (its ``Py_mod_gil`` slot, 3.13+), so a
free-threaded interpreter forced to load it turns the GIL back on; the slot is read back here
(docs/free-threading.md says why, and what would have to change).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest
from oxloop import _compat


def _import_with(fake: str, allow: bool = False) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import sys
        {fake}
        try:
            import oxloop
        except ImportError as e:
            print("ImportError:", e)
            print("native loaded:", "oxloop._oxloop" in sys.modules)
        else:
            print("imported; install:", hasattr(oxloop, "install"))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != _compat.ALLOW_ENV}
    if allow:
        env[_compat.ALLOW_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


FUTURE = "sys.version_info = (3, 16, 0, 'final', 0)"
PAST = "sys.version_info = (3, 9, 18, 'final', 0)"
FREE_THREADED = "sys.abiflags = 't'"


@pytest.mark.parametrize(
    "fake,running",
    [(FUTURE, "CPython 3.16.0"), (PAST, "CPython 3.9.18"), (FREE_THREADED, "(free-threaded)")],
    ids=["3.16", "3.9", "free-threaded"],
)
def test_unsupported_interpreter_is_refused_before_native_code(fake, running):
    result = _import_with(fake)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    supported = "3.10, 3.11, 3.12, 3.13, 3.14, 3.15"
    assert first.startswith(f"ImportError: oxloop supports CPython {supported}")
    assert running in first
    assert "OXLOOP_ALLOW_UNSUPPORTED_PYTHON=1" in first
    assert second == "native loaded: False"


def test_the_environment_variable_lets_it_try_anyway():
    # On a faked 3.16 the package then follows 3.16's asyncio: no policies, so no install().
    result = _import_with(FUTURE, allow=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported; install: False"


def test_the_running_interpreter_is_supported():
    assert _compat.unsupported_reason() is None
    result = _import_with("")
    assert result.returncode == 0, result.stderr
    # -W error: importing oxloop warns about nothing on any supported version.
    assert result.stdout.strip() == "imported; install: True"


@pytest.mark.parametrize(
    "version,implementation,abiflags,refused",
    [
        ((3, 10, 0), "cpython", "", False),
        ((3, 15, 2), "cpython", "", False),
        ((3, 14, 0), "cpython", "d", False),  # a debug build is supported
        ((3, 14, 0), "cpython", "td", True),
        ((3, 13, 0), "cpython", "t", True),
        ((3, 16, 0), "cpython", "", True),
        ((4, 0, 0), "cpython", "", True),
        ((3, 11, 7), "pypy", "", True),
    ],
)
def test_unsupported_reason(version, implementation, abiflags, refused):
    reason = _compat.unsupported_reason(version, implementation, abiflags)
    assert (reason is not None) is refused


# ---- the extension's own declaration: it needs the GIL ------------------------------------------
# `Py_mod_gil` (PEP 703; https://docs.python.org/3/c-api/module.html#c.Py_mod_gil): a slot of the
# module's definition, read by a free-threaded interpreter at import, which re-enables the GIL
# (with a RuntimeWarning) for a module that says Py_MOD_GIL_USED. On a GIL build CPython reads
# nothing from it, so the only way to check it here is to read the slot table itself. PyO3 0.28+
# writes Py_MOD_GIL_NOT_USED unless `#[pymodule(gil_used = true)]` says otherwise (src/lib.rs).
PY_MOD_GIL_USED = 0  # (void *)0, Include/moduleobject.h (3.13+)
PY_MOD_GIL_NOT_USED = 1  # (void *)1


class _ModuleDefSlot(ctypes.Structure):
    # PyModuleDef_Slot, Include/moduleobject.h (3.5-3.14).
    _fields_ = [("slot", ctypes.c_int), ("value", ctypes.c_size_t)]


class _ModuleDef(ctypes.Structure):
    # PyModuleDef (Include/moduleobject.h): PyModuleDef_Base, whose head is a PyObject
    # (object.__basicsize__ bytes), then m_init, m_index, m_copy; then m_name ... m_free.
    _fields_ = [
        ("ob_base", ctypes.c_char * object.__basicsize__),
        ("m_init", ctypes.c_void_p),
        ("m_index", ctypes.c_ssize_t),
        ("m_copy", ctypes.c_void_p),
        ("m_name", ctypes.c_char_p),
        ("m_doc", ctypes.c_char_p),
        ("m_size", ctypes.c_ssize_t),
        ("m_methods", ctypes.c_void_p),
        ("m_slots", ctypes.POINTER(_ModuleDefSlot)),
    ]


class _PySlot(ctypes.Structure):
    # PySlot, Include/slots.h (3.15): sl_id, sl_flags, a reserved word, then a pointer-sized
    # union (sl_ptr for Py_mod_gil, which PySlot_DATA stores).
    _fields_ = [
        ("sl_id", ctypes.c_uint16),
        ("sl_flags", ctypes.c_uint16),
        ("sl_reserved", ctypes.c_uint32),
        ("sl_ptr", ctypes.c_size_t),
    ]


def _gil_slot_values() -> list[int]:
    """The values of every Py_mod_gil slot the loaded extension declares."""
    from oxloop import _oxloop

    found = []
    if sys.version_info >= (3, 15):
        # 3.15 imports a module from the slot array its `PyModExport_<name>` returns (PEP 793;
        # PyO3 0.30 exports one), where Py_mod_gil is 87 (Include/slots_generated.h).
        export = ctypes.PyDLL(_oxloop.__file__).PyModExport__oxloop
        export.restype = ctypes.POINTER(_PySlot)
        export.argtypes = []
        slots = export()
        i = 0
        while slots[i].sl_id != 0:
            if slots[i].sl_id == 87:
                found.append(slots[i].sl_ptr)
            i += 1
    else:
        get_def = ctypes.pythonapi.PyModule_GetDef
        get_def.restype = ctypes.POINTER(_ModuleDef)
        get_def.argtypes = [ctypes.py_object]
        slots = get_def(_oxloop).contents.m_slots
        i = 0
        while slots[i].slot != 0:
            if slots[i].slot == 4:  # Py_mod_gil, Include/moduleobject.h (3.13, 3.14)
                found.append(slots[i].value)
            i += 1
    return found


@pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason="Py_mod_gil exists from 3.13 (PEP 703), the first version with a free-threaded build",
)
def test_extension_declares_that_it_needs_the_gil():
    # docs/free-threading.md lists what in the binding relies on the GIL; until that is
    # replaced, a free-threaded interpreter must turn the GIL on for this module, not trust it.
    assert _gil_slot_values() == [PY_MOD_GIL_USED]
