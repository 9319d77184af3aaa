"""Mutation testing of the core (`make mutation`): mutmut 3 on the code partners' trust rests on.

Scopes: statistical secrecy (`publish/secrecy.py` and the history's cross-release rules), the promote path
(`ingest/promote.py` and the two helpers it reads the live table with), `quality/`, the indicator registry
loader (`indicators/families.py`) and INSEE's archive reader (`ingest/readers/insee.py`: its dictionary
handling). Each scope runs with the tests that cover it. mutmut names mutants by module, so the
package is laid out flat (`qpvhub/`) in a work copy under `.qpvhub/mutation/`; one PostgreSQL cluster
serves every mutant's tests. Writes `bench/mutation.json`: killed / survived / timeout / untested per
scope, the score (killed + timeout) / all, the survivors' names and diffs, and the time it took.

    .venv/bin/python bench/mutation.py [--scope secrecy] [--max-children 2]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

SCOPES = {
    "secrecy": {"patterns": ["qpvhub.publish.secrecy.*",
                             *(f"qpvhub.publish.series.x_{f}__mutmut_*" for f in
                               ("published", "check", "hidden_counts", "_unit"))], "target": 0.90,
                "tests": ["tests/unit/test_secrecy.py", "tests/unit/test_secrecy_attacker.py",
                          "tests/unit/test_series_secrecy.py"]},
    "promote": {"patterns": ["qpvhub.ingest.promote.x_promote__mutmut_*", "qpvhub.platform.db.x_columns_of__mutmut_*",
                             "qpvhub.platform.db.x_table_exists__mutmut_*"], "target": 0.80,
                "tests": ["tests/faults/test_promote_steps.py"]},
    "quality": {"patterns": ["qpvhub.quality.*"], "target": 0.80,
                "tests": ["tests/unit/test_quality.py", "tests/unit/test_catalog.py",
                          "tests/integration/test_quality_gate.py"]},
    "registry": {"patterns": [f"qpvhub.indicators.families.x_{f}__mutmut_*" for f in
                              ("split_header", "parse_family", "_ordered", "load_families")], "target": 0.80,
                 "tests": ["tests/unit/test_registry.py"]},
    # INSEE's archives read through their own dictionary: the whole reader (dictionary, levels, markers, numbers)
    "insee_reader": {"patterns": ["qpvhub.ingest.readers.insee.*"], "target": 0.80,
                     "tests": ["tests/unit/test_insee_reader.py"]},
}
KILLED = {"killed", "timeout"}  # a mutant that hangs the tests is caught too


def _work_copy(work: Path) -> None:
    """The tracked tree, with plugins/qpvhub/ as qpvhub/ (mutmut's module names), and its mutmut config."""
    if work.exists():
        shutil.rmtree(work)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if not src.is_file():
            continue
        dest = work / (rel.replace("plugins/qpvhub/", "qpvhub/", 1) if rel.startswith("plugins/qpvhub/") else rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def _config(work: Path, tests: list[str]) -> None:
    text = (work / "pyproject.toml").read_text(encoding="utf-8")
    text += ("\n[tool.mutmut]\nsource_paths = [\"qpvhub/\"]\n"
             f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
             "also_copy = [\"include\", \"sql\", \"tests\", \"dags\"]\n")
    (work / "pyproject.toml").write_text(text, encoding="utf-8")


def _results(work: Path, env: dict) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                         capture_output=True, text=True).stdout
    return {name.strip(): status.strip() for name, _, status in
            (line.rpartition(": ") for line in out.splitlines() if ": " in line)}


def _diff(work: Path, env: dict, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, env=env, capture_output=True,
                         text=True).stdout
    return "\n".join(line for line in out.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scope", action="append", choices=sorted(SCOPES), help="only this scope (repeatable)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    scopes = {k: v for k, v in SCOPES.items() if not args.scope or k in args.scope}
    from qpvhub.platform.embedded import EmbeddedCluster

    work = ROOT / ".qpvhub" / "mutation"
    t0 = time.monotonic()
    _work_copy(work)
    _config(work, sorted({t for s in scopes.values() for t in s["tests"]}))
    # mutmut writes the package and tests to mutants/: it must exist before Python starts, or the import
    # system caches "nothing there" for that PYTHONPATH entry
    (work / "mutants").mkdir()
    cluster = EmbeddedCluster(ROOT / ".qpvhub" / "mutation-pg")
    cluster.start()
    env = {**os.environ, "PYTHONPATH": str(work / "mutants"), "QPVHUB_PROJECT_DIR": str(work / "mutants"),
           "QPVHUB_TEST_PG_URI": cluster.uri("postgres"), "GX_ANALYTICS_ENABLED": "False"}
    try:
        patterns = [p for s in scopes.values() for p in s["patterns"]]
        run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children),
                              *patterns], cwd=work, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stdout.replace("\r", "\n")[-4000:], run.stderr[-4000:], sep="\n")
        results = _results(work, env)
        report: dict = {"tool": "mutmut", "seconds": round(time.monotonic() - t0), "scopes": {}}
        ok = True
        for name, scope in scopes.items():
            mine = {m: s for m, s in results.items() if any(fnmatch.fnmatchcase(m, p) for p in scope["patterns"])}
            counts: dict[str, int] = {}
            for s in mine.values():
                counts[s] = counts.get(s, 0) + 1
            score = sum(counts.get(s, 0) for s in KILLED) / len(mine) if mine else 0.0
            survivors = sorted(m for m, s in mine.items() if s not in KILLED)
            report["scopes"][name] = {
                "mutants": len(mine), **counts, "score": round(score, 3), "target": scope["target"],
                "met": score >= scope["target"], "tests": scope["tests"],
                "survivors": [{"name": m, "status": mine[m], "diff": _diff(work, env, m)} for m in survivors]}
            ok &= score >= scope["target"]
            print(f"{name:<9} {len(mine):>4} mutants  killed {counts.get('killed', 0):>4}  timeout "
                  f"{counts.get('timeout', 0):>3}  survived {counts.get('survived', 0):>4}  untested "
                  f"{counts.get('no tests', 0):>3}  score {score:.1%} (target {scope['target']:.0%})")
        if not results:
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
            return 2
        report["seconds"] = round(time.monotonic() - t0)
        # scopes not run this time keep their last figures; each scope says how long the run that measured it took
        for name in report["scopes"]:
            report["scopes"][name]["seconds"] = report["seconds"]
        out = ROOT / "bench" / "mutation.json"
        if out.exists() and args.scope:
            kept = json.loads(out.read_text(encoding="utf-8")).get("scopes", {})
            report["scopes"] = {**{k: v for k, v in kept.items() if k not in report["scopes"]}, **report["scopes"]}
            report["scopes"] = dict(sorted(report["scopes"].items(), key=lambda kv: list(SCOPES).index(kv[0])
                                           if kv[0] in SCOPES else len(SCOPES)))
        out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"bench/mutation.json written ({report['seconds']} s)")
        return 0 if ok else 1
    finally:
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
