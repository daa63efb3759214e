"""scripts/suite_balance.py: the seconds of a JUnit XML file per pytest-xdist group."""

from __future__ import annotations

from support.script_modules import suite_balance

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_a" name="test_one@nnunet_workspace" time="100.5"/>
<testcase classname="tests.test_b" name="test_two[x]@nnunet_workspace" time="20.0"/>
<testcase classname="tests.test_c" name="test_three@test_c" time="30.0"/>
<testcase classname="tests.test_d" name="test_serial" time="1.5"/>
</testsuite></testsuites>
"""


def test_seconds_and_tests_per_group(tmp_path):
    path = tmp_path / "suite.xml"
    path.write_text(JUNIT)
    seconds, tests = suite_balance.seconds_per_group(str(path))
    assert seconds == {"nnunet_workspace": 120.5, "test_c": 30.0, "(none)": 1.5}
    assert tests == {"nnunet_workspace": 2, "test_c": 1, "(none)": 1}


def test_bounds_printed_and_bad_files_refused(tmp_path, capsys):
    path = tmp_path / "suite.xml"
    path.write_text(JUNIT)
    assert suite_balance.main([str(path), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    # the longest group (120.5 s) bounds the suite above all tests / 2 workers (76 s)
    assert "at least 120 s on 2 workers" in out and "= 76 s" in out
    assert out.index("nnunet_workspace") < out.index("test_c")
    (tmp_path / "broken.xml").write_text("<testsuites>")
    assert suite_balance.main([str(tmp_path / "broken.xml")]) == 2
    assert "not a readable JUnit XML file" in capsys.readouterr().err
