"""The goal/latest/verdict table at the top of BENCHMARKS.md is rebuilt from the sections' hidden
summaries: a verdict follows its figure and target, and a section without a summary adds no row."""

from benchmarks.summary import comment, headline, rebuild_summary, summaries, verdict

MET = {"benchmark": "DiT vs Wan", "goal": "ratio <= 0.83", "latest": 0.709, "latest_text": "demo 0.709",
       "target": 0.83, "direction": "<=", "section": "dit", "link": "#bench-dit", "date": "2026-11-25"}
# Its stored verdict says "met", but 1.441 > 1.15: the table recomputes it from the figures.
MISSED = {"benchmark": "Dual vs AIM", "goal": "ratio <= 1.15", "latest": 1.441, "target": 1.15,
          "direction": "<=", "verdict": "met", "section": "dual", "link": "#bench-dual", "date": "2026-11-26"}

DOC = f"""# Benchmarks

Intro.

<!-- bench:dit -->
## DiT
{comment(MET)}
<!-- /bench:dit -->

<!-- bench:old -->
## An old section with no summary: 9.99 ratio
<!-- /bench:old -->

<!-- bench:dual -->
## Dual
{comment(MISSED)}
<!-- /bench:dual -->
"""


def _rows(text: str) -> list[list[str]]:
    table = text.split("<!-- summary-table")[1].split("<!-- /summary-table -->")[0]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[1:]
            if line.startswith("|")]


def test_table_goes_under_the_heading_with_one_row_per_summary():
    out = rebuild_summary(DOC)
    assert out.startswith("# Benchmarks\n\n<!-- summary-table")
    assert out.index("<!-- /summary-table -->") < out.index("Intro.")
    header, rule, *rows = _rows(out)
    assert header == ["benchmark", "goal", "latest", "verdict", "section"]
    assert rows == [
        ["DiT vs Wan", "ratio <= 0.83", "demo 0.709", "met", "[dit](#bench-dit), 2026-11-25"],
        ["Dual vs AIM", "ratio <= 1.15", "1.441", "missed", "[dual](#bench-dual), 2026-11-26"],
    ]
    assert "9.99" not in out.split("<!-- /summary-table -->")[0]  # the section without a summary


def test_rebuilding_replaces_the_table_and_is_idempotent():
    once = rebuild_summary(DOC)
    assert rebuild_summary(once) == once
    assert once.count("<!-- summary-table") == 1
    # A section rerun with a new figure changes its row only; the other keeps its last figure.
    rerun = once.replace(comment(MET), comment({**MET, "latest": 0.91, "latest_text": "demo 0.91"}))
    rows = _rows(rebuild_summary(rerun))[2:]
    assert rows[0][2:4] == ["demo 0.91", "missed"] and rows[1][2:4] == ["1.441", "missed"]
    assert [s["benchmark"] for s in summaries(rerun)] == ["DiT vs Wan", "Dual vs AIM"]


def test_headline_and_verdicts():
    assert verdict(0.709, 0.83, "<=") == "met" and verdict(0.836, 0.83, "<=") == "missed"
    assert verdict(0.6, 0.5, ">=") == "met" and verdict(None, 1.05) == "not run yet"
    assert verdict(1.0, None) == "no goal (reported)"
    assert headline("x", "<= 75 s", None, verdict_text="not measured here")["verdict"] == "not measured here"
    quick = {**MET, "quick": True}
    assert "quick run" in _rows(rebuild_summary(f"# B\n{comment(quick)}\n"))[2][3]
