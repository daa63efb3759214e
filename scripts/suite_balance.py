"""How the suite's time falls on its pytest-xdist groups, from a JUnit XML file.

`make test` runs `--dist loadgroup` on as many workers as cores (two in CI): a group runs whole
on one worker, so the suite lasts at least as long as its longest group, and at least the sum
of all tests over the number of workers. Run the suite with `--junitxml FILE`, then
`python scripts/suite_balance.py FILE`: the seconds per group (setup, call and teardown of its
tests), longest first, and the two bounds. xdist names each test `name@group` in the file.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import Counter


def seconds_per_group(path: str) -> tuple[Counter, Counter]:
    """Seconds and number of tests per xdist group; tests without a group under '(none)'."""
    seconds, tests = Counter(), Counter()
    for case in ET.parse(path).getroot().iter("testcase"):
        _, at, group = case.get("name", "").rpartition("@")
        group = group if at else "(none)"
        seconds[group] += float(case.get("time") or 0.0)
        tests[group] += 1
    return seconds, tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit_xml", help="the file pytest wrote with --junitxml")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (CI: 2)")
    parser.add_argument("--top", type=int, default=10, help="groups to list")
    args = parser.parse_args(argv)
    try:
        seconds, tests = seconds_per_group(args.junit_xml)
    except (OSError, ET.ParseError) as error:
        print(f"{args.junit_xml}: not a readable JUnit XML file ({error}); write one with "
              f"`pytest --junitxml FILE`", file=sys.stderr)
        return 2
    if not seconds:
        print(f"{args.junit_xml}: no test cases in it", file=sys.stderr)
        return 2
    print(f"{'seconds':>8}  {'tests':>5}  group")
    for group, total in seconds.most_common(args.top):
        print(f"{total:8.0f}  {tests[group]:5d}  {group}")
    longest, everything = max(seconds.values()), sum(seconds.values())
    print(f"the suite lasts at least {max(longest, everything / args.workers):.0f} s on "
          f"{args.workers} workers: longest group {longest:.0f} s, all tests {everything:.0f} s "
          f"/ {args.workers} = {everything / args.workers:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
