"""Is the interactive preset as good as the papers' full budget? A pooled comparison.

Reads the per-run rows that ``benchmarks/quality.py --json`` writes, for the paper preset
(1000 iterations) and the interactive preset, and compares them image by image and method
by method (a *group*): the runs of one group differ only by their seed (and, across
builds, by the bfloat16 rounding of the step, which moves a run like another seed).

Per group it prints both presets' scores, then over all groups together:

- the difference of the means (interactive - paper), averaged over the groups, so that an
  image that is easy for both does not weigh on the comparison;
- its standard error, from the seed-to-seed spread of single runs around their group's
  mean (pooled over the groups, each preset its own) and the number of runs;
- the seed-to-seed standard deviation of the paper preset itself: the run-to-run noise a
  difference is measured against. The presets are called equal within run-to-run noise
  when the whole interval of two standard errors around the difference lies within one
  such standard deviation of zero (an equivalence margin of one run's noise).

The same lines are printed for each dataset alone.

Example, from the project root::

    python benchmarks/compare_budgets.py \\
        --paper benchmarks/results/paper_budget_*.json \\
        --interactive benchmarks/results/interactive_2026-11-27b.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCORES = ("miou", "ari")
#: Preset names that stand for the interactive preset in the rows (the channel sweep
#: labelled its 48-channel runs, the preset's own setting, this way).
INTERACTIVE_NAMES = ("interactive", "interactive n_channels=48")

Group = tuple[str, str, str]  # dataset, image, method


def load_rows(paths: Sequence[Path], presets: Sequence[str]) -> dict[Group, list[dict]]:
    """Rows of the given presets from `quality.py` JSON files, grouped by image and method.

    Raises
    ------
    SystemExit
        When a file is missing or holds no row of the presets.
    """
    groups: dict[Group, list[dict]] = defaultdict(list)
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"error: {path} does not exist; pass quality.py --json files.")
        rows = json.loads(path.read_text())["rows"]
        for row in rows:
            if row.get("preset") in presets and row.get("miou") is not None:
                groups[(row["dataset"], str(row["image"]), row["method"])].append(row)
    if not groups:
        raise SystemExit(
            f"error: no rows of preset {' or '.join(presets)} in {', '.join(map(str, paths))}."
        )
    return groups


def _pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Standard deviation of single values around their group's mean, pooled; and the
    degrees of freedom (groups of one value contribute none)."""
    squares = sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups)
    dof = sum(len(g) - 1 for g in groups)
    return (math.sqrt(squares / dof) if dof else float("nan")), dof


def _pooled_difference(
    paper: dict[Group, list[dict]], interactive: dict[Group, list[dict]],
    groups: Sequence[Group], score: str,
) -> dict[str, Any]:
    """Mean over `groups` of (mean interactive - mean paper) for `score`, and its noise."""
    a = [[r[score] for r in paper[g]] for g in groups]
    b = [[r[score] for r in interactive[g]] for g in groups]
    sd_a, _ = _pooled_sd(a)
    sd_b, _ = _pooled_sd(b)
    # Variance of the mean over k groups of (mean b - mean a): the sum over the groups of
    # sd_b^2 / n_b + sd_a^2 / n_a, divided by k^2.
    variance = sum(sd_b**2 / len(y) + sd_a**2 / len(x) for x, y in zip(a, b, strict=True))
    difference = statistics.fmean(
        statistics.fmean(y) - statistics.fmean(x) for x, y in zip(a, b, strict=True)
    )
    error = math.sqrt(variance) / len(groups)
    return {
        "difference": difference,
        "standard_error": error,
        "paper_seed_sd": sd_a,
        "interactive_seed_sd": sd_b,
        "paper_runs": sum(map(len, a)),
        "interactive_runs": sum(map(len, b)),
        # Equal within run-to-run noise: the whole +-2 SE interval of the difference lies
        # within +- one paper run's seed-to-seed standard deviation.
        "within_noise": abs(difference) + 2 * error < sd_a,
    }


def compare(
    paper: dict[Group, list[dict]], interactive: dict[Group, list[dict]]
) -> dict[str, Any]:
    """Per-group scores and the pooled difference of the presets.

    Returns
    -------
    dict
        ``groups``: one entry per image and method present for both presets; ``pooled``:
        for all groups together and for each dataset, per score, the mean difference
        (interactive - paper), its standard error, the presets' seed-to-seed standard
        deviations, the numbers of runs and ``within_noise``.
    """
    common = sorted(set(paper) & set(interactive))
    if not common:
        raise SystemExit("error: the two presets share no image and method to compare.")
    subsets = {"all": common}
    for dataset in sorted({g[0] for g in common}):
        subsets[dataset] = [g for g in common if g[0] == dataset]
    pooled = {
        name: {score: _pooled_difference(paper, interactive, groups, score) for score in SCORES}
        for name, groups in subsets.items()
    }
    groups = [
        {
            "dataset": g[0], "image": g[1], "method": g[2],
            **{f"paper_{s}": [r[s] for r in paper[g]] for s in SCORES},
            **{f"interactive_{s}": [r[s] for r in interactive[g]] for s in SCORES},
            "paper_iterations": [r["iterations"] for r in paper[g]],
            "interactive_iterations": [r["iterations"] for r in interactive[g]],
        }
        for g in common
    ]
    return {"groups": groups, "pooled": pooled}


def format_report(result: dict[str, Any]) -> str:
    """The per-group table and the pooled lines, as text."""
    def values(v: Sequence[float]) -> str:
        return " ".join(f"{x:.3f}" for x in v)

    lines = [
        "group (dataset image method): paper runs | interactive runs (mIoU; ARI)",
    ]
    for g in result["groups"]:
        lines.append(
            f"{g['dataset']} {g['image']} {g['method'].upper()}: "
            f"mIoU {values(g['paper_miou'])} | {values(g['interactive_miou'])}; "
            f"ARI {values(g['paper_ari'])} | {values(g['interactive_ari'])}; "
            f"iterations {values(g['paper_iterations']).replace('.000', '')} | "
            f"{values(g['interactive_iterations']).replace('.000', '')}"
        )
    for name, scores in result["pooled"].items():
        lines.append("")
        lines.append(f"{name}:")
        for score, p in scores.items():
            low = p["difference"] - 2 * p["standard_error"]
            high = p["difference"] + 2 * p["standard_error"]
            verdict = (
                "equal within run-to-run noise" if p["within_noise"]
                else "not shown equal within run-to-run noise"
            )
            lines.append(
                f"  {score}: interactive - paper = {p['difference']:+.3f} "
                f"(+-2 SE: {low:+.3f} to {high:+.3f}); seed-to-seed SD of one run: paper "
                f"{p['paper_seed_sd']:.3f}, interactive {p['interactive_seed_sd']:.3f}; "
                f"{p['paper_runs']} paper / {p['interactive_runs']} interactive runs: {verdict}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, print the comparison, optionally write it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", nargs="+", type=Path, required=True,
                        help="quality.py --json files with paper-preset rows")
    parser.add_argument("--interactive", nargs="+", type=Path, required=True,
                        help="quality.py --json files with interactive-preset rows")
    parser.add_argument("--json", metavar="OUT", type=Path,
                        help="also write the comparison here (refuses to overwrite)")
    args = parser.parse_args(argv)
    if args.json is not None and args.json.exists():
        parser.error(f"{args.json} exists; choose another file or remove it first.")
    result = compare(
        load_rows(args.paper, ("paper",)), load_rows(args.interactive, INTERACTIVE_NAMES)
    )
    print(format_report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
