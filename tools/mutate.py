"""Mutation testing with mutmut 3: each module against the fast tests that cover it.

    python tools/mutate.py run [TARGET...]      a fresh run of each target (default: all), then the table
    python tools/mutate.py report [TARGET...]   the table of the last runs
    python tools/mutate.py survivors TARGET     its surviving mutants with their diffs, each with an entry
                                                to paste into tools/equivalent_mutants/<target>.toml
    python tools/mutate.py retest TARGET        test its survivors again (after adding tests)

mutmut reads its settings from ./pyproject.toml and keeps its state in ./mutants, with one test
selection for all the files it mutates. So each target gets a workspace .mutmut/<target>/: links
to the packages and tests/, and a pyproject.toml of its own (the project's plus a [tool.mutmut]
table naming the target's files and tests). mutmut records which tests run each function and
runs only those against that function's mutants.

Score = (killed + timeout) / (mutants - equivalent), per file. Equivalent mutants are the ones
tools/equivalent_mutants/<target>.toml list (see there how an entry is keyed).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutmut"
EQUIVALENT = ROOT / "tools" / "equivalent_mutants"  # one file per target: <target>.toml
MUTMUT = str(Path(sys.executable).parent / "mutmut")
JOBS = os.environ.get("MUTATE_JOBS", "1")  # mutants tested at once

# The grid's fast tests (the property tests are slower and add little per mutant).
GRID_TESTS = [
    "tests/test_grid_core.py",
    "tests/test_grid_orders_nobody_tracks.py",
    "tests/test_unknown_outcomes_end_to_end.py",
    "tests/test_grid_lattice.py",
    "tests/test_grid_state.py",
    "tests/test_grid_booking.py",
    "tests/test_grid_targets.py",
    "tests/test_grid_diff.py",
    "tests/test_grid_adoption.py",
    "tests/test_grid_inputs.py",
    "tests/test_grid_published.py",
]
# The executor's tests against a scripted venue; the others in tests/test_executor.py start a nats-server.
EXECUTOR_FAST = [
    "tests/test_executor_outcomes.py",
    "tests/test_executor_answers.py",
    "tests/test_executor_placement.py",
    *(
        f"tests/test_executor.py::{name}"
        for name in (
            "test_transient_errors_are_retried_and_each_attempt_is_rate_limited",
            "test_an_outcome_that_stays_unknown_is_retried_later_not_reported_as_failed",
            "test_permanent_refusals_are_not_retried",
            "test_a_duplicate_client_id_reports_the_existing_order_and_places_nothing",
            "test_a_create_whose_answer_was_lost_is_looked_up_before_any_resend_and_never_placed_twice",
        )
    ),
]
SIM_TESTS = [
    "tests/test_sim_engine.py",
    "tests/test_sim_book.py",
    "tests/test_sim_orders.py",
    "tests/test_sim_perpetuals.py",
    "tests/test_sim_margin.py",
    "tests/test_sim_liquidation.py",
    "tests/test_sim_hostile.py",
    "tests/test_sim_checks.py",
    "tests/test_sim_matching_exact.py",
    "tests/test_sim_book_walk.py",
]
# target -> (the files it mutates, the tests that cover them); the last two start a nats-server per test.
TARGETS = {
    "lattice": (["strategies/grid/lattice.py"], GRID_TESTS),
    "grid-core": (
        [f"strategies/grid/{m}.py" for m in ("core", "booking", "adoption", "targets", "diff", "state")],
        GRID_TESTS,
    ),
    "executor": (["executors/executor.py", "executors/answers.py"], EXECUTOR_FAST),
    "sim-matching": (["venues/sim/matching.py", "venues/sim/book.py", "venues/sim/checks.py"], SIM_TESTS),
    "risk": (["monitors/risk/core.py", "monitors/risk/conditions.py"], ["tests/test_risk_core.py", "tests/test_risk_mutants.py"]),
    "handler": (["bus/handler.py"], ["tests/test_handler_mutants.py", "tests/test_handler_runtime.py", "tests/test_executor.py"]),
    "runtime": (
        ["bus/runtime.py", "bus/consumer.py", "bus/contract.py"],
        [
            "tests/test_contract.py",
            "tests/test_runtime_mutants.py",
            "tests/test_runtime.py",
            "tests/test_runtime_contract.py",
            "tests/test_hostile_inputs.py",
        ],
    ),
    # The funding arbitrage's saga and the monitor's spread arithmetic: pure, driven by testkit/arbitrage.py.
    "arbitrage": (
        ["strategies/arbitrage/core.py", "strategies/arbitrage/saga.py", "strategies/arbitrage/legs.py"],
        # The properties add little per mutant and take most of the time.
        ["tests/test_arbitrage_core.py", "tests/test_arbitrage_mutants.py"],
    ),
    "funding": (
        ["monitors/funding/spread.py", "monitors/funding/core.py"],
        ["tests/test_funding_spread.py", "tests/test_funding_monitor.py", "tests/test_funding_mutants.py"],
    ),
    # The backtest's router and the shortcut's two queries: a survivor is a backtest that could
    # disagree with live trading unseen.
    "removal": (["orchestration/removal.py"], ["tests/test_removal.py"]),
    "backtest": (
        ["backtest/session.py", "backtest/wiring.py", "venues/sim/candle_path.py"],
        ["tests/test_backtest_session.py", "tests/test_backtest_cli.py"],
    ),
    # ccxt's real code against recorded payloads (testkit/ccxt.py), offline.
    "ccxt": (
        ["venues/ccxt/ids.py", "venues/ccxt/errors.py", "venues/ccxt/parse.py"],
        ["tests/test_ccxt_ids.py", "tests/test_ccxt_errors.py", "tests/test_ccxt_venue.py", "tests/test_ccxt_mutants.py"],
    ),
}
SETTINGS = {
    # The same examples every run: a survivor stays one until the code or the tests change.
    "pytest_add_cli_args": ["--hypothesis-seed=0", "-p", "no:cacheprovider"],
    # A mutant may run (its tests' time + constant) * multiplier seconds; mutmut's default of 15
    # spends minutes on every endless loop. 5 leaves room for a loaded machine.
    "timeout_multiplier": 5.0,
    "timeout_constant": 2.0,
}
DETECTED = {"killed", "timeout", "segfault"}  # "segfault": mutmut's name for the SIGKILL at the CPU limit


def workspace(target: str) -> Path:
    files, tests = TARGETS[target]
    ws = WORK / target
    ws.mkdir(parents=True, exist_ok=True)
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests")
    for name in [*packages, "tests"]:
        if not (ws / name).is_symlink():
            (ws / name).symlink_to(ROOT / name)
    table = {"source_paths": packages, "only_mutate": files, "pytest_add_cli_args_test_selection": tests, **SETTINGS}
    lines = [f"{key} = {json.dumps(value)}" for key, value in table.items()]  # JSON is TOML for these values
    (ws / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + "\n[tool.mutmut]\n" + "\n".join(lines) + "\n")
    return ws


def mutmut(ws: Path, *args: str, capture: bool = False) -> str:
    done = subprocess.run([MUTMUT, *args], cwd=ws, text=True, capture_output=capture, check=False)
    if done.returncode != 0:
        sys.exit(f"mutmut {' '.join(args[:3])} failed in {ws} (exit {done.returncode})\n{done.stdout or ''}{done.stderr or ''}")
    return done.stdout or ""


def run(target: str) -> None:
    ws = workspace(target)
    shutil.rmtree(ws / "mutants", ignore_errors=True)
    print(f"== {target}: {' '.join(TARGETS[target][0])} against {' '.join(TARGETS[target][1])}", flush=True)
    started = time.monotonic()
    mutmut(ws, "run", "--max-children", JOBS)
    (ws / "wall_seconds").write_text(f"{time.monotonic() - started:.0f}\n")


def statuses(target: str) -> dict[str, str]:
    """Each mutant of the target's last run -> its status (killed, survived, timeout, no tests, ...)."""
    ws = workspace(target)
    if not (ws / "mutants").exists():
        return {}
    out = mutmut(ws, "results", "--all", "true", capture=True)
    return dict(line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)


def source_file(mutant: str) -> str:
    """strategies.grid.core.xǁGridCoreǁstep__mutmut_3 -> strategies/grid/core.py"""
    return re.split(r"\.x[_ǁ]", mutant, maxsplit=1)[0].replace(".", "/") + ".py"


def function_name(mutant: str) -> str:
    """...xǁGridCoreǁstep__mutmut_3 -> GridCore.step; ...x_check_config__mutmut_5 -> check_config"""
    mangled = re.split(r"\.(?=x[_ǁ])", mutant.partition("__mutmut_")[0])[-1]
    return mangled[2:] if mangled.startswith("x_") else ".".join(mangled.split("ǁ")[1:])


def function_lines(path: str) -> dict[str, tuple[int, int]]:
    """Top-level functions and methods in `path` -> (first line, last line), decorators included."""
    spans: dict[str, tuple[int, int]] = {}
    for node in ast.parse((ROOT / path).read_text()).body:
        members = [(f"{node.name}.", n) for n in node.body] if isinstance(node, ast.ClassDef) else [("", node)]
        for prefix, f in members:
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([f.lineno, *(d.lineno for d in f.decorator_list)])
                spans[prefix + f.name] = (first, f.end_lineno or first)
    return spans


def describe(target: str, mutant: str) -> dict[str, str]:
    """A mutant as its file, function, line, the mutated lines before and after, and its diff."""
    diff = mutmut(workspace(target), "show", mutant, capture=True)
    body = diff.split("\n@@", 1)[-1].splitlines()
    before = "\n".join(line[1:].strip() for line in body if line.startswith("-"))
    after = "\n".join(line[1:].strip() for line in body if line.startswith("+"))
    path, func = source_file(mutant), function_name(mutant)
    first, last = function_lines(path).get(func, (1, 0))
    source = (ROOT / path).read_text().splitlines()
    line = next((n for n in range(first, last + 1) if source[n - 1].strip() == before.split("\n")[0]), first)
    return {"file": path, "function": func, "line": str(line), "before": before, "after": after, "diff": diff}


def equivalents() -> list[dict[str, str]]:
    entries: list[dict[str, str]] = []
    for path in sorted(EQUIVALENT.glob("*.toml")):
        entries += tomllib.loads(path.read_text()).get("mutant", [])
    return entries


def listed(m: dict[str, str], entry: dict[str, str]) -> bool:
    return all(m[key] == str(entry.get(key, "")).strip() for key in ("file", "function", "before", "after"))


def score(target: str, path: str, found: dict[str, str], entries: list[dict[str, str]]) -> dict[str, int]:
    """Counts for one file; marks the entries it used as `used`."""
    mine = {k: v for k, v in found.items() if source_file(k) == path}
    # A diff costs a mutmut call: only for survivors in functions that have entries.
    funcs = {e.get("function") for e in entries if e.get("file") == path}
    equivalent = 0
    for k, status in mine.items():
        if status not in DETECTED and function_name(k) in funcs:
            m = describe(target, k)
            hits = [e for e in entries if listed(m, e)]
            for e in hits:
                e["used"] = "yes"
            equivalent += bool(hits)
    values = list(mine.values())
    return {
        "mutants": len(values),
        "killed": values.count("killed"),
        "timeout": values.count("timeout") + values.count("segfault"),
        "survived": sum(v not in DETECTED and v != "no tests" for v in values) - equivalent,
        "no tests": values.count("no tests"),
        "equivalent": equivalent,
        "not checked": values.count("not checked"),
    }


def table(targets: list[str]) -> None:
    entries = equivalents()
    columns = ["mutants", "killed", "timeout", "survived", "no tests", "equivalent"]
    print(f"{'module':<26}" + "".join(f"{c:>11}" for c in columns) + f"{'score':>8}{'wall':>8}")
    for target in targets:
        found = statuses(target)
        wall = WORK / target / "wall_seconds"
        for path in TARGETS[target][0]:
            n = score(target, path, found, entries)
            tested = n["mutants"] - n["equivalent"]
            pct = f"{100 * (n['killed'] + n['timeout']) / tested:.1f}%" if tested else "-"
            note = f"  ({n['not checked']} not checked: the run was interrupted)" if n["not checked"] else ""
            secs = wall.read_text().strip() + "s" if wall.exists() else "-"
            print(f"{path:<26}" + "".join(f"{n[c]:>11}" for c in columns) + f"{pct:>8}{secs:>8}{note}")
    files = {f for t in targets for f in TARGETS[t][0]}
    for e in entries:
        if e.get("file") in files and not e.get("used"):
            print(f"note: an entry in {EQUIVALENT.name}/ matches no survivor: {e.get('file')} {e.get('function')}: {e.get('after')}")


def survivors(target: str) -> None:
    entries = equivalents()
    for mutant, status in sorted(statuses(target).items()):
        if status in DETECTED:
            continue
        m = describe(target, mutant)
        known = any(listed(m, e) for e in entries)
        print(f"# {m['file']}:{m['line']} {m['function']}" + ("  [equivalent]" if known else "") + f"\n{m['diff']}\n")
        if not known:
            print("[[mutant]]\n" + "".join(f"{key} = {toml_string(m[key])}\n" for key in ("file", "function", "before", "after")), end="")
            print('reason = "TODO"\n')


def toml_string(s: str) -> str:
    return f"'''\n{s}'''" if "\n" in s or "'" in s else f"'{s}'"


def main(argv: list[str]) -> None:
    command, targets = (argv[0], argv[1:]) if argv and argv[0] in ("run", "report", "survivors", "retest") else ("run", argv)
    targets = targets or list(TARGETS)
    if unknown := [t for t in targets if t not in TARGETS]:
        sys.exit(f"unknown target {unknown}; the targets: {', '.join(TARGETS)}")
    for target in targets:
        if command == "run":
            run(target)
        elif command == "survivors":
            survivors(target)
        elif command == "retest":
            names = [k for k, v in statuses(target).items() if v not in DETECTED]
            if names:
                mutmut(workspace(target), "run", "--max-children", JOBS, *names)
    if command != "survivors":
        table(targets)


if __name__ == "__main__":
    main(sys.argv[1:])
