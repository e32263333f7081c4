"""diana-analyze on crafted files with known alpha and beta (every figure checked against
diana_pipeline.stats), its JSON shape, the plot, DynamoDB as a source, and each bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from diana_pipeline import stats
from diana_pipeline.cli.analyze import main
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port
from diana_pipeline.sinks.csv_files import PosteriorCsvFiles
from diana_pipeline.sinks.dynamodb_table import PosteriorTable
from diana_pipeline.sinks.records import POSTERIOR_FIELDS, to_cells
from diana_pipeline.store import EventStore
from diana_pipeline.windows import WindowSpan
from diana_pipeline_tests.conftest import run_command

DAY = datetime(2026, 11, 21)
HOUR = timedelta(hours=1)
# Per window: variant -> (alpha, beta, exposures). The stored derived columns are nonsense on
# purpose: the report must recompute them from alpha and beta.
WINDOWS = {
    DAY + 10 * HOUR: {"control": (31, 71, 100), "treatment": (41, 61, 100), "blue": (2, 3, 3)},
    DAY + 11 * HOUR: {
        "control": (3501, 6501, 10000),
        "treatment": (4501, 5501, 10000),
        "blue": (3401, 6601, 10000),
    },
}


def crafted(test_id: str = "crafted-test") -> list[dict]:
    return [
        {
            "test_id": test_id,
            "variant": variant,
            "window_start": start,
            "window_end": start + HOUR,
            "timestamp": start + HOUR,
            "alpha": float(alpha),
            "beta": float(beta),
            "exposures_inc": 0,
            "successes_inc": 0,
            "exposures_total": n,
            "successes_total": alpha - 1,
            "success_rate_total": 0.0,
            "mean": 0.0,
            "ci_low": 0.0,
            "ci_high": 0.0,
            "prob_best": 0.5,
            "expected_loss": 0.0,
        }
        for start, variants in WINDOWS.items()
        for variant, (alpha, beta, n) in variants.items()
    ]


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    files = PosteriorCsvFiles(tmp_path / "output")
    [path] = files.write(crafted(), WindowSpan(DAY + 10 * HOUR, DAY + 12 * HOUR))
    return path


@pytest.fixture(autouse=True)
def _no_experiments_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The crafted test is unknown to any experiments file: default thresholds apply.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIANA_CONFIG", raising=False)


def analyze_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def expected(start: datetime) -> dict[str, object]:
    names = list(WINDOWS[start])
    alphas = np.array([WINDOWS[start][v][0] for v in names], dtype=float)
    betas = np.array([WINDOWS[start][v][1] for v in names], dtype=float)
    low, high = stats.credible_interval(alphas, betas)
    return {
        "names": names,
        "alphas": alphas,
        "betas": betas,
        "prob_best": stats.prob_best(alphas, betas),
        "expected_loss": stats.expected_loss(alphas, betas),
        "ci_low": low,
        "ci_high": high,
    }


def test_latest_window_figures_match_the_stats_module(
    csv_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [report] = analyze_json(capsys, str(csv_file))["tests"]
    want = expected(DAY + 11 * HOUR)
    assert report["test_id"] == "crafted-test"
    assert report["window_start"] == "2026-11-21T11:00:00Z"
    assert [v["variant"] for v in report["variants"]] == ["blue", "control", "treatment"]
    for variant in report["variants"]:
        k = want["names"].index(variant["variant"])
        assert set(variant) >= {"variant", "alpha", "beta", "mean", "ci_low", "ci_high",
                                "prob_best", "expected_loss"}  # fmt: skip
        assert (variant["alpha"], variant["beta"]) == (want["alphas"][k], want["betas"][k])
        assert variant["mean"] == pytest.approx(want["alphas"][k] / 10002, abs=1e-15)
        for key in ("prob_best", "expected_loss", "ci_low", "ci_high"):
            assert variant[key] == pytest.approx(want[key][k], abs=1e-12), key
    beats = report["prob_superiority"]
    assert beats["treatment"]["control"] == pytest.approx(
        stats.prob_superiority(4501, 5501, 3501, 6501), abs=1e-12
    )
    assert beats["control"]["treatment"] == pytest.approx(
        1 - beats["treatment"]["control"], abs=1e-12
    )
    # The anytime-valid figures run over both windows; the test is unknown to any
    # experiments file, so its variants compare by name (blue is the control) in equal shares.
    starts = sorted(WINDOWS)
    exposures = [[WINDOWS[t][n][2] for n in ("blue", "control", "treatment")] for t in starts]
    successes = [[WINDOWS[t][n][0] - 1 for n in ("blue", "control", "treatment")] for t in starts]
    p_values = stats.always_valid_pvalues(exposures, successes).min(axis=0)
    low, high = stats.lift_confidence_sequence(exposures, successes, level=1 - 0.05 / 2)
    for k, variant in enumerate(report["variants"]):
        want_p = None if k == 0 else p_values[k]
        assert variant["p_value_always_valid"] == want_p
        assert variant["lift_cs_low"] == low[:, k].max()
        assert variant["lift_cs_high"] == high[:, k].min()
    assert report["decision"]["verdict"] == "winner"
    assert report["decision"]["winner"] == "treatment"
    assert "anytime-valid test rejects" in report["decision"]["reason"]


def test_at_names_an_earlier_window_with_too_little_data(
    csv_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for at in ("2026-11-21T10:00", "2026-11-21-10:00", "2026-11-21T10:00:00Z"):
        [report] = analyze_json(capsys, str(csv_file), "--at", at)["tests"]
        assert report["window_start"] == "2026-11-21T10:00:00Z"
        want = expected(DAY + 10 * HOUR)
        got = {v["variant"]: v["prob_best"] for v in report["variants"]}
        assert [got[n] for n in want["names"]] == pytest.approx(want["prob_best"], abs=1e-12)
        assert report["decision"]["verdict"] == "not enough data"
        assert "blue" in report["decision"]["reason"]


def test_text_report_and_plot(
    csv_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "posteriors.png"
    assert main([str(csv_file), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "crafted-test · window 2026-11-21 11:00 → 12:00 UTC" in out
    # treatment: Beta(4501, 5501), mean 0.4500, and its interval from the stats module.
    low, high = stats.credible_interval(4501.0, 5501.0)
    assert re.search(rf"0\.4500 +\[{float(low):.4f}, {float(high):.4f}\]", out)
    assert "anytime-valid p" in out and "lift confidence sequence" in out
    assert "P(row beats column)" in out
    assert "→ treatment is the likely winner" in out
    assert plot.read_bytes().startswith(b"\x89PNG") and plot.stat().st_size > 10_000


def test_the_command_runs_from_the_folder_of_experiments_yaml(csv_file: Path) -> None:
    result = run_command("diana-analyze", str(csv_file), "--format", "json", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tests"][0]["decision"]["winner"] == "treatment"


def test_without_a_file_reads_the_configured_folder(
    csv_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIANA_CSV_DIR", str(csv_file.parent))
    [report] = analyze_json(capsys, "--config", str(REPO_ROOT / "experiments.yaml"))["tests"]
    assert report["test_id"] == "crafted-test"


def bad(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header_only.csv"
    header_only.write_text(",".join(POSTERIOR_FIELDS) + "\n")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("when,clicks\n2026-11-21,3\n")
    bad_alpha = tmp_path / "bad_alpha.csv"
    cells = to_cells(crafted()[0])
    bad_alpha.write_text(
        ",".join(POSTERIOR_FIELDS)
        + "\n"
        + ",".join("-3" if f == "alpha" else cells[f] for f in POSTERIOR_FIELDS)
        + "\n"
    )
    PosteriorCsvFiles(tmp_path / "one").write(crafted()[:1], WindowSpan())
    one_variant = next((tmp_path / "one").glob("*.csv"))
    good = str(next((tmp_path / "output").glob("*.csv")))
    return {
        "missing": ([str(tmp_path / "nope.csv")], "cannot read .*nope.csv: No such file"),
        "empty": ([str(empty)], "empty.csv: the file is empty"),
        "header only": ([str(header_only)], "has a header but no records"),
        "wrong shape": ([str(wrong)], "not a posteriors file, the header lacks test_id"),
        "bad alpha": ([str(bad_alpha)], "line 2: alpha should be a positive number, got '-3'"),
        "one variant": ([str(one_variant)], "has 1 variant in the window"),
        "unknown window": ([good, "--at", "2026-11-20T10:00"], "no records for the window"),
        "bad --at": ([good, "--at", "tuesday"], "--at: expected a window start"),
        "unknown test": ([good, "--test", "other"], "no records of test other"),
    }


def test_each_bad_input_gives_one_line_and_a_non_zero_exit(
    csv_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (args, message) in bad(tmp_path).items():
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.startswith("diana-analyze: error: ") and err.count("\n") == 1, (name, err)
        assert re.search(message, err), (name, err)


def test_an_unreachable_dynamodb_gives_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIANA_DYNAMODB_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    code = main(["--source", "dynamodb", "--config", str(REPO_ROOT / "experiments.yaml")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("diana-analyze: error: cannot reach DynamoDB at http://127.0.0.1:")
    assert err.count("\n") == 1


@pytest.mark.servers
def test_dynamodb_source_reports_the_same_as_the_csv(
    csv_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dynamodb_endpoint: str,
) -> None:
    table_name = f"analyze-{uuid.uuid4().hex[:8]}"
    experiments = Path("experiments.yaml")
    experiments.write_text(
        (REPO_ROOT / "experiments.yaml").read_text().replace("ab_posteriors", table_name)
    )
    monkeypatch.setenv("DIANA_DYNAMODB_ENDPOINT", dynamodb_endpoint)
    table = PosteriorTable(dynamodb_endpoint, "us-east-1", table_name)
    table.ensure_table()
    table.write(crafted())
    from_dynamodb = analyze_json(capsys, "--source", "dynamodb")
    from_csv = analyze_json(capsys, str(csv_file))
    assert from_dynamodb == from_csv


def test_duckdb_source_reports_the_same_as_the_csv(
    csv_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "events.duckdb"
    monkeypatch.setenv("DIANA_DUCKDB_PATH", str(path))
    config = ["--config", str(REPO_ROOT / "experiments.yaml")]
    assert main(["--source", "duckdb", *config]) == 2
    assert "no event store at" in capsys.readouterr().err
    with EventStore.open(path) as store:
        store.replace_windows("posteriors", list(WINDOWS), crafted())
    from_duckdb = analyze_json(capsys, "--source", "duckdb", *config)
    assert from_duckdb == analyze_json(capsys, str(csv_file))


def test_analyze_does_not_load_dagster() -> None:
    """diana-analyze reads sinks and does statistics: it starts without Dagster's import time
    and runs where only the sinks' clients are installed."""
    probe = "import sys, diana_pipeline.cli.analyze; print('dagster' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == "False"


METRICS_CONFIG = """
tests:
  - test_id: shop
    minimum_sample: 10
    metrics:
      - {name: clicked, type: binary, role: primary, event: ButtonClicked}
      - {name: orders, type: count, event: Purchase}
      - {name: revenue, type: revenue, role: guardrail, margin: 0.05, event: Purchase}
    variants:
      - {name: control, allocation: 0.5}
      - {name: treatment, allocation: 0.5}
"""


def metric_file(tmp_path: Path) -> tuple[Path, Path]:
    """A config with three metrics and a CSV file of one window's records: 1,000 users an
    arm; orders 200 and 260; revenue 2,000.0 and 1,900.0 with squares 30,000 and 29,000."""
    from diana_pipeline.analysis import posterior_records
    from diana_pipeline.config import load_config
    from diana_pipeline.counting import MetricSums, WindowCounts
    from diana_pipeline.metric_analysis import metric_records

    config_file = tmp_path / "metrics.yaml"
    config_file.write_text(METRICS_CONFIG)
    config = load_config(config_file)
    start, micro = DAY + 10 * HOUR, 1_000_000
    clicks = {"control": 100, "treatment": 150}
    counts = [WindowCounts("shop", v, 1000, c, 1000, c) for v, c in clicks.items()]
    sums = {
        ("shop", "orders", "control"): MetricSums(200, 260),
        ("shop", "orders", "treatment"): MetricSums(260, 400),
        ("shop", "revenue", "control"): MetricSums(2000 * micro, 30000 * micro**2),
        ("shop", "revenue", "treatment"): MetricSums(1900 * micro, 29000 * micro**2),
    }
    users = {start: {"control": (1000, 1000), "treatment": (1000, 1000)}}
    none = {key: MetricSums() for key in sums}
    windows = [(start, start + HOUR)]
    records = posterior_records(config, {start: counts}, windows, start + HOUR)
    records += metric_records(config.tests[0], users, {start: none, start + HOUR: sums},
                              windows, start + HOUR)  # fmt: skip
    for record in records:  # figures the report must not trust
        record["prob_best"] = 0.5
    [path] = PosteriorCsvFiles(tmp_path / "out").write(records, WindowSpan(start, start + HOUR))
    return config_file, path


def test_every_metric_gets_a_block_recomputed_from_its_sums(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file, path = metric_file(tmp_path)
    [report] = analyze_json(capsys, str(path), "--config", str(config_file))["tests"]
    orders, revenue = report["metrics"]
    assert (orders["metric"], revenue["metric"], revenue["role"]) == ("orders", "revenue",
                                                                      "guardrail")  # fmt: skip
    # Independent of the records' figures: Gamma(1 + orders, 1 + users), and the normal
    # posterior of the mean from the sums.
    shapes, rates = np.array([201.0, 261.0]), np.array([1001.0, 1001.0])
    want = stats.prob_best_gamma(shapes, rates)
    assert [v["prob_best"] for v in orders["variants"]] == pytest.approx(want, abs=1e-12)
    means = np.array([2.0, 1.9])
    sds = np.sqrt((np.array([30000.0, 29000.0]) - 1000 * means**2) / 999 / 1000)
    worse = stats.prob_lift_below(means, sds, -0.05)[1]
    [control, treatment] = revenue["variants"]
    assert (control["mean"], treatment["mean"]) == (2.0, 1.9)
    assert control["prob_worse_by_margin"] is None
    assert treatment["prob_worse_by_margin"] == pytest.approx(worse, rel=1e-12)
    # Clicked decides (150 against 100 of 1,000), unless revenue blocks it.
    assert report["decision"]["verdict"] == ("keep running" if worse >= 0.05 else "winner")


def test_one_metric_alone_and_an_unknown_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file, path = metric_file(tmp_path)
    assert main([str(path), "--config", str(config_file), "--metric", "revenue"]) == 0
    text = capsys.readouterr().out
    assert "revenue (revenue, guardrail, margin 5.0%; higher is better)  ◆ guardrail" in text
    assert "orders" not in text and "clicked (binary" not in text
    assert main([str(path), "--config", str(config_file), "--metric", "bounce"]) == 2
    assert (
        "test shop has no metric bounce (has: clicked, orders, revenue)" in capsys.readouterr().err
    )


def test_by_a_dimension_gives_a_table_per_segment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diana_pipeline.analysis import posterior_records
    from diana_pipeline.config import load_config
    from diana_pipeline.counting import SegmentCounts, WindowCounts
    from diana_pipeline.segments import segment_records

    config_file = tmp_path / "segments.yaml"
    config_file.write_text(
        METRICS_CONFIG.replace("    metrics:", "    dimensions: [device]\n    metrics:")
    )
    config = load_config(config_file)
    start = DAY + 10 * HOUR
    windows = [(start, start + HOUR)]
    figures = {"mobile": ((600, 60), (600, 90)), "desktop": ((400, 40), (400, 60))}
    segments = [SegmentCounts("shop", "device", s, v, e, c, e, c)
                for s, pairs in figures.items()
                for v, (e, c) in zip(("control", "treatment"), pairs, strict=True)]  # fmt: skip
    counts = [WindowCounts("shop", "control", 1000, 100, 1000, 100),
              WindowCounts("shop", "treatment", 1000, 150, 1000, 150)]  # fmt: skip
    records = posterior_records(config, {start: counts}, windows, start + HOUR)
    records += segment_records(config, {start: segments}, windows, start + HOUR)
    [path] = PosteriorCsvFiles(tmp_path / "out").write(records, WindowSpan(start, start + HOUR))
    args = [str(path), "--config", str(config_file), "--by", "device"]
    [report] = analyze_json(capsys, *args)["tests"]
    assert [s["segment"] for s in report["segments"]] == ["desktop", "mobile"]
    mobile = report["segments"][1]["variants"]
    best = stats.prob_best([61.0, 91.0], [541.0, 511.0])
    assert [v["prob_best"] for v in mobile] == pytest.approx(best, abs=1e-12)
    assert [v["exposures"] for v in mobile] == [600, 600]
    assert main([*args[:-1], "country"]) == 2
    assert "test shop has no segments of country (has: device)" in capsys.readouterr().err
