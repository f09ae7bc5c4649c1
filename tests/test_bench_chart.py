"""The benchmark charts (benches/chart.py), drawn from small synthetic results files.

Benchmark tooling, not loop behaviour: no loop fixture. The drawing tests skip where matplotlib
(an optional dev dependency) is missing; the skip path itself is tested everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def chart():
    path = os.path.join(ROOT, "benches", "chart.py")
    spec = importlib.util.spec_from_file_location("chart_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _probes(loops):
    probes = {
        name: {"ok": True, "version": "1.0", "built": "2026-01-01 00:00:00"} for name in loops
    }
    probes["asyncio"]["version"] = "stdlib"
    return probes


def _meta(bench, loops):
    return {
        "bench": bench,
        "date": "2026-01-02 03:04",
        "machine": {
            "cpu": "Test CPU 9000",
            "cores": 2,
            "usable_cores": 2,
            "platform": "Linux",
            "load_avg": "0.10 0.20 0.30",
            "python": "CPython 3.99.0",
            "executable": "/usr/bin/python3",
        },
        "git": "abc1234",
        "rounds": 3,
        "probes": _probes(loops),
    }


def _ok(value, key="cpu"):
    return {"status": "ok", key: value, f"{key}_spread": 0.05}


def net_doc():
    loops = ["asyncio", "uvloop", "rloop", "oxloop", "floor"]
    rows = {
        "protocol-1k-10c-tcp": {
            "label": "protocol 1 KiB x10, tcp",
            "results": {
                "asyncio": _ok(8e-6, "cpu_per") | {"rate": 1e5},
                "uvloop": _ok(6e-6, "cpu_per") | {"rate": 1.3e5},
                "rloop": _ok(24e-6, "cpu_per") | {"rate": 4e4},
                "oxloop": _ok(4e-6, "cpu_per") | {"rate": 1.7e5},
                "floor": _ok(3e-6, "cpu_per") | {"rate": 1.8e5},
            },
        },
        "streams-1k-10c-unix": {
            "label": "streams 1 KiB x10, unix",
            "results": {
                "asyncio": _ok(9e-6, "cpu_per"),
                "uvloop": _ok(7e-6, "cpu_per"),
                "rloop": {"status": "n/a", "error": "NotImplementedError"},
                "oxloop": _ok(14e-6, "cpu_per"),
                "floor": _ok(3e-6, "cpu_per"),
            },
        },
    }
    return {"meta": _meta("net", loops), "baseline": "uvloop", "rows": rows}


def micro_doc():
    loops = ["asyncio", "uvloop", "rloop", "oxloop"]
    rows = {
        "call_soon": {
            "label": "call_soon 1M",
            "n": 1_000_000,
            "results": {
                "asyncio": _ok(0.73),
                "uvloop": _ok(0.28),
                "rloop": _ok(0.16),
                "oxloop": _ok(0.19),
            },
        },
    }
    return {"meta": _meta("micro", loops), "baseline": "uvloop", "rows": rows}


def test_ratios_are_each_loops_cpu_over_uvloops_and_none_where_a_cell_failed(chart):
    bars, labels, per_row = chart.ratios(net_doc())
    assert bars == ["asyncio", "rloop", "oxloop"]  # uvloop is the 1x line, the floor a tick
    assert labels == ["protocol 1 KiB x10, tcp", "streams 1 KiB x10, unix"]
    assert per_row[0]["oxloop"] == pytest.approx(4 / 6)
    assert per_row[0]["floor"] == pytest.approx(3 / 6)
    assert per_row[1]["rloop"] is None
    assert chart.ratio_words(4 / 6) == "1.50x faster"
    assert chart.ratio_words(2.0) == "2.00x slower"
    assert chart.kind_of(micro_doc()) == "micro"
    # A file written before `bench` was recorded: recognised by what it holds.
    old = net_doc()
    del old["meta"]["bench"]
    assert chart.kind_of(old) == "net"


def test_the_caption_names_machine_versions_date_and_noise(chart):
    text = chart.caption(net_doc()).replace("\n", " ")
    for part in ("Test CPU 9000", "2 cores", "CPython 3.99.0", "oxloop 1.0 (git abc1234)"):
        assert part in text
    assert "2026-01-02 03:04 UTC" in text
    assert "median of 3 rounds" in text and "5% typically" in text
    assert "busy" not in text  # load average 0.10 on 2 cores
    busy = net_doc()
    busy["meta"]["machine"]["load_avg"] = "6.90 6.63 4.22"
    assert "The machine was busy with other work" in chart.caption(busy).replace("\n", " ")


def test_a_chart_is_drawn_from_a_results_file(chart, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "net.json"
    chart.save(net_doc(), str(path), "net")
    assert json.loads(path.read_text())["rows"]["protocol-1k-10c-tcp"]["label"]
    png, svg = tmp_path / "net.png", tmp_path / "net.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a drawn figure, not an empty canvas
    text = svg.read_text()  # text stays text in the SVG (svg.fonttype none)
    for part in ("protocol 1 KiB x10, tcp", "streams 1 KiB x10, unix", "pure-Rust floor"):
        assert part in text
    assert "1.50x faster" in text  # oxloop's ratio, written on its bar
    assert "2.00x slower" in text
    assert "Test CPU 9000" in text
    out = capsys.readouterr().out
    assert "results : " in out and "net.png" in out and "net.svg" in out


def test_the_chart_cli_draws_several_files_as_one_figure(chart, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "micro.json").write_text(json.dumps(micro_doc()))
    (tmp_path / "net.json").write_text(json.dumps(net_doc()))
    out = tmp_path / "demo"
    rc = chart.main([str(tmp_path / "micro.json"), str(tmp_path / "net.json"), "-o", str(out)])
    assert rc == 0
    text = (tmp_path / "demo.svg").read_text()
    assert "call_soon 1M" in text and "protocol 1 KiB x10, tcp" in text
    assert (tmp_path / "demo.png").stat().st_size > 20_000


def test_without_matplotlib_the_results_are_saved_and_the_chart_is_skipped(
    chart, tmp_path, monkeypatch, capsys
):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    path = tmp_path / "micro.json"
    chart.save(micro_doc(), str(path), "micro")
    assert path.exists()
    assert not (tmp_path / "micro.png").exists()
    assert "chart   : skipped (matplotlib is not installed" in capsys.readouterr().out


def test_a_benchmark_script_saves_its_results_and_chart_beside_its_table(tmp_path):
    # children.py's pipe row at 1 MiB on three loops: a few seconds, the scripts' real path.
    out = tmp_path / "sub.json"
    script = os.path.join(ROOT, "benches", "children.py")
    args = ["--rows", "pipe", "--n", str(1 << 20), "--loops", "asyncio,uvloop,oxloop"]
    proc = subprocess.run(
        [sys.executable, script, *args, "--rounds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 MiB from a child's stdout" in proc.stdout  # the table is still printed
    doc = json.loads(out.read_text())
    assert doc["meta"]["bench"] == "subprocess" and doc["meta"]["date"]
    assert doc["rows"]["pipe"]["results"]["oxloop"]["status"] == "ok"
    if importlib.util.find_spec("matplotlib") is None:
        assert "chart   : skipped" in proc.stdout
    else:
        assert (tmp_path / "sub.png").stat().st_size > 20_000
        assert (tmp_path / "sub.svg").exists()


def _load_net(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "net_under_test", os.path.join(ROOT, "benches", "net.py")
    )
    net = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, net)  # its dataclasses look their module up
    spec.loader.exec_module(net)
    return net


TLS_FLOOR_OK = {"ok": True, "version": "mio + OpenSSL 9.9.9", "libssl": "/lib/libssl.so.9"}
TLS_FLOOR_NA = {"ok": False, "version": "mio", "why": "cargo build failed: no cargo"}


@pytest.mark.parametrize("floor", [TLS_FLOOR_OK, TLS_FLOOR_NA], ids=["floor", "no-floor"])
def test_the_tls_table_is_saved_and_drawn_as_its_own_chart(
    chart, tmp_path, monkeypatch, capsys, floor
):
    # net.py's TLS table becomes tls.json beside net.json, a "tls" chart; the floor (Rust over
    # the same OpenSSL) is a tick on the Protocol rows, or left out with a note when it cannot run.
    pytest.importorskip("matplotlib")
    net = _load_net(monkeypatch)
    asked = ["asyncio", "uvloop", "rloop", "oxloop", "floor"]
    monkeypatch.setattr(net, "tls_floor", lambda: floor)
    monkeypatch.setattr(net, "probe", lambda name: _probes(asked)[name])
    loops, probe = net.tls_columns(asked)
    assert probe is floor
    assert loops == (asked if floor["ok"] else ["asyncio", "uvloop", "rloop", "oxloop"])
    results = {
        f"{kind}:{size}": {
            "asyncio": _ok(15e-6, "cpu_per"),
            "uvloop": _ok(24e-6, "cpu_per"),
            "rloop": {"status": "n/a", "error": net.TLS_NA["rloop"]},
            "oxloop": _ok(12e-6, "cpu_per"),
        }
        | (
            {
                "floor": _ok(6e-6, "cpu_per")
                if kind in net.TLS_FLOOR_KINDS
                else {"status": "n/a", "error": net.TLS_FLOOR_STREAMS}
            }
            if "floor" in loops
            else {}
        )
        for kind, size in net.TLS_ROWS
    }
    net.print_tls_report(loops, results, 3, floor)
    table = capsys.readouterr().out
    doc = net.tls_doc(loops, results, 3, floor)
    assert chart.kind_of(doc) == "tls"
    assert list(doc["rows"]) == [
        "tls-protocol-1k",
        "tls-protocol-64k",
        "tls-streams-1k",
        "tls-streams-64k",
    ]
    args = net.argparse.Namespace(
        no_save=False, no_chart=False, tls_only=False, json=str(tmp_path / "net.json")
    )
    net.save_tls(args, doc)
    assert json.loads((tmp_path / "tls.json").read_text())["meta"]["bench"] == "tls"
    text = (tmp_path / "tls.svg").read_text()
    assert "TLS echo" in text and "TLS streams 64 KiB x10" in text
    assert "2.00x faster" in text  # oxloop 12 us against uvloop's 24
    assert "pure-Rust floor" not in text  # the TLS floor is Rust over OpenSSL
    if floor["ok"]:
        assert doc["meta"]["probes"]["floor"] is floor
        per_row = chart.ratios(doc)[2]
        assert [cells["floor"] for cells in per_row] == [0.25, 0.25, None, None]
        assert "Rust floor, no Python (TLS: the same OpenSSL)" in text
        assert "floor: Rust (mio + OpenSSL 9.9.9)" in chart.caption(doc).replace("\n", " ")
        assert "/lib/libssl.so.9" in table and "floor: n/a: the floor is the same echo" in table
    else:
        assert "floor" not in doc["meta"]["probes"]
        assert all("floor" not in row["results"] for row in doc["rows"].values())
        assert "Rust floor" not in text
        assert "floor: left out: cargo build failed: no cargo" in table
