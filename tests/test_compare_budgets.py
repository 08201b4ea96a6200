"""benchmarks/compare_budgets.py: the pooled interactive-vs-paper verdict."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_budgets.py"
_spec = importlib.util.spec_from_file_location("compare_budgets", _SCRIPT)
compare_budgets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_budgets)


def _write(path: Path, preset: str, scores: dict[tuple[str, str], list[float]]) -> Path:
    rows = [
        {"dataset": "bsds", "image": image, "method": method, "preset": preset,
         "seed": seed, "miou": value, "ari": value / 2, "iterations": 50}
        for (image, method), values in scores.items()
        for seed, value in enumerate(values)
    ]
    path.write_text(json.dumps({"rows": rows}))
    return path


PAPER = {("1", "sp"): [0.30, 0.40], ("2", "sp"): [0.50, 0.60], ("2", "st"): [0.20, 0.26]}


def test_runs_scattered_like_the_papers_are_equal_within_noise(tmp_path):
    interactive = {("1", "sp"): [0.33, 0.37, 0.35], ("2", "sp"): [0.58, 0.52, 0.55],
                   ("2", "st"): [0.22, 0.25, 0.23]}
    result = compare_budgets.compare(
        compare_budgets.load_rows([_write(tmp_path / "p.json", "paper", PAPER)], ("paper",)),
        compare_budgets.load_rows([_write(tmp_path / "i.json", "interactive", interactive)],
                                  compare_budgets.INTERACTIVE_NAMES),
    )
    pooled = result["pooled"]["all"]["miou"]
    assert pooled["difference"] == pytest.approx(0.0, abs=0.01)
    assert pooled["paper_runs"] == 6 and pooled["interactive_runs"] == 9
    assert pooled["within_noise"]
    assert len(result["groups"]) == 3


def test_a_shift_larger_than_the_noise_is_not_called_equal(tmp_path):
    lower = {key: [v - 0.2 for v in values] for key, values in PAPER.items()}
    result = compare_budgets.compare(
        compare_budgets.load_rows([_write(tmp_path / "p.json", "paper", PAPER)], ("paper",)),
        compare_budgets.load_rows([_write(tmp_path / "i.json", "interactive", lower)],
                                  compare_budgets.INTERACTIVE_NAMES),
    )
    pooled = result["pooled"]["bsds"]["miou"]
    assert pooled["difference"] == pytest.approx(-0.2)
    assert not pooled["within_noise"]
    assert "not shown equal" in compare_budgets.format_report(result)


def test_files_without_the_preset_are_refused(tmp_path):
    path = _write(tmp_path / "p.json", "paper", PAPER)
    with pytest.raises(SystemExit, match="no rows of preset interactive"):
        compare_budgets.load_rows([path], compare_budgets.INTERACTIVE_NAMES)
    with pytest.raises(SystemExit, match="does not exist"):
        compare_budgets.load_rows([tmp_path / "missing.json"], ("paper",))


def test_the_json_report_never_overwrites_a_file(tmp_path, capsys):
    paper = _write(tmp_path / "p.json", "paper", PAPER)
    interactive = _write(tmp_path / "i.json", "interactive", PAPER)
    out = tmp_path / "out.json"
    argv = ["--paper", str(paper), "--interactive", str(interactive), "--json", str(out)]
    assert compare_budgets.main(argv) == 0
    written = out.read_text()
    with pytest.raises(SystemExit):
        compare_budgets.main(argv)
    assert "exists" in capsys.readouterr().err
    assert out.read_text() == written
