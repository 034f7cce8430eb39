"""Mutation testing of the modules that carry the package's guarantees, with mutmut.

    python tools/mutation.py                      # every group below (tens of minutes on 2 cores)
    python tools/mutation.py calibration hub      # some groups
    python tools/mutation.py --list               # the groups, their modules and tests

For each group, mutmut rewrites one module in many small ways (an operator, a constant, a
condition) and runs the group's tests against each mutant; a mutant that no test notices
("survived") is a guarantee no test checks. Results go to ``.mutation/report.json`` and a table on
stdout: mutants, killed, survived, timeouts and the kill rate per group; ``mutmut results`` and
``mutmut show NAME`` inside ``.mutation/<group>`` show each survivor.

The repository keeps ``export/`` and ``eval/`` beside ``alphanet_zoo/`` (installed under it by
setup.cfg's package_dir). mutmut imports the code it mutates from a copy of the source folder, so
each group works on a copy of the tree folded as installed (the mapping read from setup.cfg). Not run by CI
(too slow); needs ``pip install 'mutmut>=3.3'``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from package_dirs import package_dirs  # setup.cfg's package_dir, read in one place

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutation"
# group -> (module to mutate, in the folded tree; tests that claim to cover it)
GROUPS = {
    "calibration": ("alphanet_zoo/calibration.py",
                    ["tests/test_eval_data.py", "tests/test_parity.py", "tests/test_commands.py"]),
    "counting": ("alphanet_zoo/data/accuracy.py", ["tests/test_eval.py"]),
    "selection": ("alphanet_zoo/search/evolution.py", ["tests/test_search.py"]),
    "resume": ("alphanet_zoo/train/checkpointing.py", ["tests/test_train.py", "tests/test_train_faults.py"]),
    "checkpoint": ("alphanet_zoo/checkpoint.py", ["tests/test_supernet.py", "tests/test_hub.py"]),
    "integrity": ("alphanet_zoo/hub.py", ["tests/test_hub.py"]),
    "verification": ("alphanet_zoo/export/verify.py", ["tests/test_export.py"]),
    "preprocessing": ("alphanet_zoo/preprocessing.py", ["tests/test_transforms.py", "tests/test_eval.py"]),
}
STATUS = {"killed": "killed", "survived": "survived", "timeout": "timeout", "no tests": "no tests",
          "suspicious": "suspicious", "skipped": "skipped", "not checked": "not checked"}


def fold_tree(dest: Path) -> None:
    """A copy of the repository with export/ and eval/ inside alphanet_zoo/, as installed."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, folder in sorted(package_dirs(REPO).items()):  # parents before the folders mapped inside them
        shutil.copytree(folder, dest.joinpath(*package.split(".")), ignore=ignore)
    shutil.copytree(REPO / "tests", dest / "tests", ignore=ignore)
    for name in ("pyproject.toml", "setup.cfg", "hubconf.py"):
        shutil.copy(REPO / name, dest / name)


def configure(dest: Path, module: str, tests: list[str]) -> None:
    present = [t.split("::")[0] for t in tests if (dest / t.split("::")[0]).exists()]
    with open(dest / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write("\n[tool.mutmut]\nsource_paths = [\"alphanet_zoo\"]\n"
                f"only_mutate = [{json.dumps(module)}]\n"
                f"pytest_add_cli_args_test_selection = {json.dumps(present)}\n"
                "pytest_add_cli_args = [\"-m\", \"not slow\", \"-p\", \"no:cacheprovider\"]\n"
                "also_copy = [\"hubconf.py\"]\n"
                "process_isolation = \"forkserver\"\n")


def count(results: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in results.splitlines():
        match = re.match(r"^\s*\S+: (.+)$", line)
        if match and match.group(1).strip() in STATUS:
            key = STATUS[match.group(1).strip()]
            counts[key] = counts.get(key, 0) + 1
    return counts


def run_group(name: str, children: int) -> dict:
    module, tests = GROUPS[name]
    dest = WORK / name
    fold_tree(dest)
    configure(dest, module, tests)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run([*mutmut, "run", "--max-children", str(children)], cwd=dest, env=env,
                   stdout=subprocess.DEVNULL, check=False)
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=dest, env=env, capture_output=True,
                             text=True).stdout
    counts = count(listing)
    total = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    survivors = [line.split(":")[0].strip() for line in listing.splitlines() if line.strip().endswith(": survived")]
    return {"group": name, "module": module, "tests": tests, "mutants": total, "counts": counts,
            "kill_rate": round(killed / total, 3) if total else None, "survivors": survivors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument("--children", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                        help="mutants tested at once")
    args = parser.parse_args(argv)
    if args.list:
        for name, (module, tests) in GROUPS.items():
            print(f"{name:<14}{module:<40}{' '.join(tests)}")
        return 0
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group {unknown[0]}; choose from {', '.join(GROUPS)}")
    WORK.mkdir(exist_ok=True)
    report = [run_group(name, args.children) for name in (args.groups or GROUPS)]
    (WORK / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'group':<14}{'module':<40}{'mutants':>8}{'killed':>8}{'survived':>9}{'timeout':>8}{'kill rate':>10}")
    for r in report:
        c = r["counts"]
        rate = "-" if r["kill_rate"] is None else f"{100 * r['kill_rate']:.0f}%"
        print(f"{r['group']:<14}{r['module']:<40}{r['mutants']:>8}{c.get('killed', 0):>8}{c.get('survived', 0):>9}"
              f"{c.get('timeout', 0):>8}{rate:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
