"""Do docs/results.md's sample-level numbers equal what their command prints? Reruns it and says.

    python -m bench.check_docs                       # runs explain.sample --all (≈10 min, 2 CPUs)
    python -m bench.check_docs --report runs/explain_sample_ce   # checks an existing --out

Reads every number of the "Sample level" section (the masking table, the ground-truth precision
table, the image-level curve) from docs/results.md and the same quantities from the run's
report.json, and prints one row per number: the docs' value, the run's, the tolerance and OK or
DIFF (exit status 1 on any DIFF). Tolerances: the CORTEX masking change ±0.4 points and the
concept precision ±0.6 points (docs/results.md states this machine-to-machine spread, from one
T_concept tie), each plus half a unit of the last printed digit; everything else to the
precision the docs print it (half a unit of the last digit). A rerun takes too long for CI:
run this before editing the page, and after any change that could move a number.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from cortex_jax.io.reports import SampleLevelReport

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "results.md"


def _section(text: str) -> str:
    start = text.index("## Sample level")
    return text[start : text.index("\n## ", start + 1)]


def docs_numbers(text: str) -> dict[str, tuple[float, float]]:
    """{quantity: (value, half a unit of its last printed digit)} from the sample-level section."""
    sec = _section(text)

    def num(pattern: str) -> tuple[float, float]:
        m = re.search(pattern, sec)
        if m is None:
            raise SystemExit(f"error: docs/results.md's sample-level section lacks {pattern!r}")
        s = m.group(1).replace("−", "-")
        decimals = len(s.split(".")[1]) if "." in s else 0
        return float(s), 0.5 * 10.0**-decimals

    out = {
        "cortex_accuracy_change": num(r"CORTEX T_concept \| \*\*([−\-\d.]+) points"),
        "cortex_tokens_masked": num(r"CORTEX T_concept \|[^|]*\| \*\*([\d.]+)\*\*"),
        "frequency_accuracy_change": num(r"frequency baseline[^|]*\| ([−\-\d.]+) points"),
        "frequency_tokens_masked": num(r"frequency baseline[^|]*\|[^|]*\| ([\d.]+)"),
        "concept_cortex": num(r"on the object \| \*\*([\d.]+) %"),
        "concept_frequency": num(r"on the object \|[^|]*\| ([\d.]+) %"),
        "concept_random": num(r"on the object \|[^|]*\|[^|]*\| ([\d.]+) %"),
        "image_cortex": num(r"positions on the object \| \*\*([\d.]+) %"),
        "image_random": num(r"positions on the object \|[^|]*\|[^|]*\| ([\d.]+) %"),
    }
    ns = re.search(r"^\| n \|([^\n]+)", sec, re.M)
    if ns is None:
        raise SystemExit("error: docs/results.md lacks the image-level curve table")
    n_values = [int(x) for x in ns.group(1).strip(" |").split("|")]
    for row, key in (("top-n TIS", "tis"), ("random", "random")):
        m = re.search(rf"^\| {row} \|([^\n]+)", sec, re.M)
        assert m is not None, row
        for n, v in zip(n_values, m.group(1).strip(" |").split("|"), strict=True):
            out[f"curve_{key}_n{n}"] = (float(v), 0.005)
    return out


def run_numbers(report: SampleLevelReport) -> dict[str, float]:
    """The same quantities from the run's report, in the docs' units (points, %)."""
    s, g, c = report.summary, report.ground_truth_precision, report.image_level_curve
    if g is None:
        raise SystemExit("error: the report has no ground-truth precision; run explain.sample")
    out = {
        "cortex_accuracy_change": 100 * s["cortex_accuracy_change"],
        "cortex_tokens_masked": s["cortex_tokens_masked"],
        "frequency_accuracy_change": 100 * s["frequency_accuracy_change"],
        "frequency_tokens_masked": s["frequency_tokens_masked"],
        **{k: 100 * g[k] for k in ("concept_cortex", "concept_frequency", "concept_random")},
        **{k: 100 * g[k] for k in ("image_cortex", "image_random")},
    }
    for key in ("tis", "random"):
        for n, v in zip(c.n, getattr(c, key), strict=True):
            out[f"curve_{key}_n{n}"] = v
    return out


SPREAD = {"cortex_accuracy_change": 0.4, "concept_cortex": 0.6}  # docs/results.md's stated spread


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", help="an explain.sample --all --out folder to check, not a rerun")
    args = ap.parse_args()
    docs = docs_numbers(DOCS.read_text())
    if args.report:
        folder = Path(args.report)
    else:
        folder = Path(tempfile.mkdtemp(prefix="check-docs-")) / "sample"
        cmd = [sys.executable, "-m", "explain.sample", "--all", "--out", str(folder)]
        print("running:", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    try:
        got = run_numbers(SampleLevelReport.read(folder))
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    bad = 0
    print(f"{'quantity':28} {'docs':>8} {'run':>9} {'±':>6}  verdict")
    for key, (value, half_unit) in docs.items():
        tol = SPREAD.get(key, 0.0) + half_unit + 1e-9  # the spread is between printed values
        ok = abs(got[key] - value) <= tol
        bad += not ok
        print(f"{key:28} {value:8.3f} {got[key]:9.4f} {tol:6.3f}  {'OK' if ok else 'DIFF'}")
    print(f"{len(docs) - bad} of {len(docs)} numbers as the docs state")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
