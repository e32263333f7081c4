"""diana-analyze: read posterior records from a CSV file or the DynamoDB table and report,
per test: each variant's mean, 95% credible interval, alpha and beta, P(best) and expected
loss; the anytime-valid p-value and lift confidence sequence against the control; the
probability that each variant beats each other; the likely winner, or why there is none yet.

Everything is recomputed from alpha, beta and the counts with diana_pipeline.stats, at the
latest window of each test unless --at names one (the anytime-valid test runs over every
window up to it). Thresholds and allocations come from experiments.yaml when it knows the test
(defaults and equal shares otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import duckdb

from diana_pipeline.analysis import is_conversion, summarize_test
from diana_pipeline.config import (
    CONFIG_ENV_VAR,
    ConfigError,
    ExperimentsConfig,
    ExperimentTest,
    config_path,
    load_config,
)
from diana_pipeline.lake import LakeError, StoreLocation
from diana_pipeline.metric_analysis import metric_summaries
from diana_pipeline.plots import posterior_figure
from diana_pipeline.segments import segment_summaries
from diana_pipeline.sinks.csv_files import FILE_PATTERN, read_csv_file
from diana_pipeline.sinks.dynamodb_table import DynamoDBError, PosteriorTable
from diana_pipeline.sinks.records import Record, RecordError, format_time, parse_time
from diana_pipeline.store import EventStore
from diana_pipeline.totals import latest_records
from diana_pipeline.windows import PARTITION_KEY_FORMAT

# What a record needs for the analysis; the other columns of docs/design.md §5 are optional.
NEEDED = (
    "test_id",
    "variant",
    "window_start",
    "alpha",
    "beta",
    "exposures_total",
    "successes_total",
)


class AnalyzeError(Exception):
    """Bad input: a one-line message, exit code 2 (1 when a server cannot be reached)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diana-analyze",
        description=__doc__.split("\n\n")[0],
        epilog="examples: diana-analyze .diana/output/posteriors_2026-11-21.csv | "
        "diana-analyze --source dynamodb --format json | diana-analyze --plot posteriors.png",
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="posteriors_<date>.csv file(s) (default with --source csv: every one in the "
        "configured folder)",
    )
    parser.add_argument(
        "--source",
        choices=("csv", "dynamodb", "duckdb"),
        default="csv",
        help="csv files (default), the DynamoDB table, or DuckDB's posteriors table (what the "
        "console sink logged)",
    )
    parser.add_argument(
        "--config", help=f"experiments file (default: ${CONFIG_ENV_VAR} or ./experiments.yaml)"
    )
    parser.add_argument(
        "--at", help="the window to report, by its start: 2026-11-21T10:00 (default: latest)"
    )
    parser.add_argument("--test", action="append", help="only this test (repeatable)")
    parser.add_argument(
        "--metric", help="only this metric (default: every one; the decision is always shown)"
    )
    parser.add_argument(
        "--by", metavar="DIMENSION", help="also a table per segment of this dimension, e.g. device"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw posterior densities")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_settings(args.config)
        records = read_records(args.source, args.files, config)
        reports, history = analyze(records, config, args.at, args.test, args.metric, args.by)
        if args.plot:
            _plot(args.plot, reports, history)
    except AnalyzeError as exc:
        print(f"diana-analyze: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.format == "json":
        print(json.dumps({"tests": reports}, indent=2, default=json_default))
    else:
        print("\n\n".join(render(report) for report in reports))
    if args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def load_settings(path: str | None) -> ExperimentsConfig | None:
    """The experiments file; without --config a missing default file just means defaults."""
    if path is None and not config_path().exists():
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        raise AnalyzeError(str(exc)) from None


def read_records(source: str, files: list[Path], config: ExperimentsConfig | None) -> list[Record]:
    """Every posterior record of a source: csv (the files, or the configured folder),
    dynamodb or duckdb. Bad input raises AnalyzeError."""
    if source != "csv":
        if files:
            raise AnalyzeError(f"FILE and --source {source} do not go together")
        if config is None:
            raise AnalyzeError(
                f"--source {source} needs experiments.yaml to find it "
                f"(pass --config or set {CONFIG_ENV_VAR})"
            )
    if source == "duckdb":
        return _read_duckdb(config.infrastructure.store_location)
    if source == "dynamodb":
        settings = config.infrastructure.dynamodb  # type: ignore[union-attr]
        table = PosteriorTable(settings.endpoint_url, settings.region, settings.table)
        try:
            records = table.read()
        except DynamoDBError as exc:
            raise AnalyzeError(str(exc), exit_code=1) from None
        except RecordError as exc:
            raise AnalyzeError(str(exc)) from None
        if not records:
            raise AnalyzeError(f"table {settings.table} at {table.endpoint} holds no records")
        return records
    paths = list(files)
    if not paths:
        if config is None:
            raise AnalyzeError("pass a posteriors CSV file (or --config for the output folder)")
        folder = config.infrastructure.csv.directory
        paths = sorted(folder.glob(FILE_PATTERN))
        if not paths:
            raise AnalyzeError(f"no {FILE_PATTERN} files in {folder}; pass a file")
    records: list[Record] = []
    for path in paths:
        try:
            records += read_csv_file(path, required=NEEDED)
        except OSError as exc:
            raise AnalyzeError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (RecordError, UnicodeDecodeError) as exc:
            raise AnalyzeError(str(exc)) from None
    return records


def _read_duckdb(location: StoreLocation) -> list[Record]:
    """The posteriors table of the event store (what every sink writes), for the console
    sink, which keeps nothing readable. Waits while a run holds the file."""
    try:
        with EventStore.open_when_free(location, timeout_s=60) as store:
            records = store.read_window_range("posteriors", None, None)
    except FileNotFoundError:
        raise AnalyzeError(f"no event store at {location}; has the pipeline run?") from None
    except LakeError as exc:
        raise AnalyzeError(str(exc), exit_code=1) from None
    except duckdb.Error as exc:
        raise AnalyzeError(f"cannot read the event store {location}: {exc}", exit_code=1) from None
    if not records:
        raise AnalyzeError(f"the event store {location} holds no posteriors yet")
    return records


def analyze(
    records: list[Record],
    config: ExperimentsConfig | None,
    at: str | None = None,
    only: list[str] | None = None,
    metric: str | None = None,
    by: str | None = None,
) -> tuple[list[dict[str, object]], list[Record]]:
    """One report per test (at its latest window, or `at`), and the records up to that
    window (for the P(best) history of the plot). A report holds the conversion's figures
    and a block per other metric (`metric`: that one alone)."""
    by_test: dict[str, list[Record]] = defaultdict(list)
    for record in latest_records(records):
        by_test[str(record["test_id"])].append(record)
    if only:
        unknown = sorted(set(only) - set(by_test))
        if unknown:
            raise AnalyzeError(f"no records of test {', '.join(unknown)} (have: {_list(by_test)})")
        by_test = {t: rs for t, rs in by_test.items() if t in only}
    moment = _window(at) if at else None
    reports, history = [], []
    for test_id, rows in sorted(by_test.items()):
        windows = sorted({r["window_start"] for r in rows})  # type: ignore[type-var]
        chosen = moment or windows[-1]
        if chosen not in windows:
            raise AnalyzeError(
                f"test {test_id} has no records for the window starting {format_time(chosen)} "
                f"(it has {len(windows)}, from {format_time(windows[0])} "
                f"to {format_time(windows[-1])})"
            )
        test = _settings(config, test_id, rows)
        window = [r for r in rows if r["window_start"] == chosen]
        names = {r["variant"] for r in window} & set(test.variant_names)
        if len(names) < 2:
            raise AnalyzeError(
                f"test {test_id} has {len(names)} variant in the window starting "
                f"{format_time(chosen)}; a comparison needs 2 or more"
            )
        # The anytime-valid test runs over every window up to the chosen one that holds
        # every variant (a partial file may lack some).
        complete = {
            start
            for start in windows
            if {r["variant"] for r in rows if r["window_start"] == start} >= set(test.variant_names)
        }
        if chosen not in complete:
            raise AnalyzeError(
                f"test {test_id} lacks variant(s) "
                f"{_list(set(test.variant_names) - names)} in the window starting "
                f"{format_time(chosen)}"
            )
        upto = [r for r in rows if r["window_start"] <= chosen and r["window_start"] in complete]  # type: ignore[operator]
        report = summarize_test(test, upto)
        report["metrics"] = metric_summaries(test, window)
        report["conversion_metric"] = test.conversion_metric.name
        if metric is not None:
            known = [m.name for m in test.reported_metrics]
            if metric not in known:
                raise AnalyzeError(f"test {test_id} has no metric {metric} (has: {_list(known)})")
            report["metrics"] = [m for m in report["metrics"] if m["metric"] == metric]  # type: ignore[attr-defined,index]
            report["conversion_shown"] = metric == test.conversion_metric.name
        if by is not None:
            report["segments"] = segment_summaries(test, window, by)
            report["dimension"] = by
            if not report["segments"]:
                known = sorted({str(r.get("dimension")) for r in rows} - {"None", "all"})
                raise AnalyzeError(f"test {test_id} has no segments of {by} (has: {_list(known)})")
        reports.append(report)
        history += [r for r in upto if "prob_best" in r and is_conversion(test, r)]
    return reports, history


def _settings(config: ExperimentsConfig | None, test_id: str, rows: list[Record]) -> ExperimentTest:
    """The test as experiments.yaml configures it; for a test it does not know, the defaults
    with the variants of its records (by name) in equal shares."""
    if config is not None:
        try:
            return config.test(test_id)
        except KeyError:
            pass
    names = sorted({str(r["variant"]) for r in rows})
    if len(names) < 2:
        raise AnalyzeError(
            f"test {test_id} has 1 variant in the window; a comparison needs 2 or more"
        )
    share = 1.0 / len(names)
    return ExperimentTest(
        test_id=test_id, variants=[{"name": n, "allocation": share} for n in names]
    )


def _window(text: str) -> datetime:
    try:
        return datetime.strptime(text, PARTITION_KEY_FORMAT)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise AnalyzeError(
            f"--at: expected a window start such as 2026-11-21T10:00, got {text!r}"
        ) from None


def _list(names: object) -> str:
    return ", ".join(sorted(names)) or "none"  # type: ignore[call-overload]


def report_figure(reports: list[dict[str, object]], history: list[Record]) -> bytes:
    """The reports' picture: posteriors, P(best) and the anytime-valid p-value's path."""
    latest = [
        {**variant, "test_id": report["test_id"]}
        for report in reports
        for variant in report["variants"]  # type: ignore[attr-defined]
    ]
    levels = {str(r["test_id"]): r["decision"]["level"] for r in reports}  # type: ignore[index]
    return posterior_figure(latest, history or latest, dpi=100, levels=levels)


def _plot(path: Path, reports: list[dict[str, object]], history: list[Record]) -> None:
    try:
        path.write_bytes(report_figure(reports, history))
    except OSError as exc:
        raise AnalyzeError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None


def json_default(value: object) -> object:
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def render(report: dict[str, object]) -> str:
    """A test's report as a table, the pairwise probabilities and the verdict."""
    variants: list[dict] = report["variants"]  # type: ignore[assignment]
    start, end = report["window_start"], report.get("window_end")
    when = f"window {start:%Y-%m-%d %H:%M}" + (f" → {end:%H:%M}" if end else "") + " UTC"
    if report.get("timestamp"):
        when += f" · computed {report['timestamp']:%Y-%m-%d %H:%M:%S} UTC"
    width = max(9, *(len(v["variant"]) for v in variants))
    lines = [f"{report['test_id']} · {when}"]
    if report.get("conversion_shown", True):
        lines += _conversion_lines(report, width)
    for block in report.get("metrics", []):  # type: ignore[attr-defined]
        lines += _metric_lines(block, width)
    for segment in report.get("segments", []):  # type: ignore[attr-defined]
        lines += _segment_lines(str(report["dimension"]), segment, width)
    decision: dict[str, str] = report["decision"]  # type: ignore[assignment]
    verdict = {
        "winner": f"{decision['winner']} is the likely winner",
        "no meaningful difference": "no meaningful difference: the test can stop",
        "keep running": "no winner yet: keep running",
        "not enough data": "not enough data",
    }[decision["verdict"]]
    lines += ["", f"  → {verdict} ({decision['reason']})"]
    return "\n".join(lines)


def _conversion_lines(report: dict[str, object], width: int) -> list[str]:
    """The conversion's table, its anytime-valid figures and the pairwise probabilities."""
    variants: list[dict] = report["variants"]  # type: ignore[assignment]
    name = report.get("conversion_metric", "conversion")
    lines = [
        "",
        f"  {name} (binary, Beta)",
        f"  {'variant':<{width}}  {'exposures':>10}  {'successes':>10}  {'mean':>7}  "
        f"{'95% credible interval':>21}  {'alpha':>10}  {'beta':>10}  {'P(best)':>7}  "
        f"{'exp. loss':>9}",
    ]
    for v in variants:
        successes = "" if v["successes"] is None else f"{v['successes']:,}"
        interval = f"[{v['ci_low']:.4f}, {v['ci_high']:.4f}]"
        lines.append(
            f"  {v['variant']:<{width}}  {v['exposures']:>10,}  {successes:>10}  "
            f"{v['mean']:>7.4f}  {interval:>21}  {_number(v['alpha']):>10}  "
            f"{_number(v['beta']):>10}  {v['prob_best']:>7.4f}  {v['expected_loss']:>9.2e}"
        )
    names = [v["variant"] for v in variants]
    beats: dict[str, dict[str, float]] = report["prob_superiority"]  # type: ignore[assignment]
    lines += [
        "",
        f"  {'vs ' + names[0]:<{width}}  {'anytime-valid p':>15}  {'lift confidence sequence':>26}",
    ]
    for v in variants[1:]:
        p = v["p_value_always_valid"]
        lines.append(
            f"  {v['variant']:<{width}}  {'—' if p is None else f'{p:.4g}':>15}  "
            f"{_bounds(v['lift_cs_low'], v['lift_cs_high']):>26}"
        )
    lines += ["", f"  {'P(row beats column)':<{width + 10}}" + "".join(f"  {n:>9}" for n in names)]
    for a in names:
        cells = "".join(f"  {'—' if a == b else f'{beats[a][b]:.4f}':>9}" for b in names)
        lines.append(f"  {a:<{width + 10}}{cells}")
    return lines


def _metric_lines(block: dict, width: int) -> list[str]:
    """One metric's table: users, observed and posterior mean with its 95% interval, P(best),
    expected loss, the anytime-valid figures of this look, and a guardrail's P(worse)."""
    role = block["role"] + (f", margin {block['margin']:.1%}" if block["margin"] else "")
    better = "lower" if block["direction"] == "decrease" else "higher"
    guardrail = block["role"] == "guardrail"
    lines = [
        "",
        f"  {block['metric']} ({block['type']}, {role}; {better} is better)"
        + ("  ◆ guardrail" if guardrail else ""),
        f"  {'variant':<{width}}  {'users':>10}  {'observed':>10}  {'mean':>10}  "
        f"{'95% interval':>23}  {'P(best)':>7}  {'exp. loss':>9}  {'anytime p':>9}  "
        f"{'lift confidence sequence':>26}" + ("  P(worse)" if guardrail else ""),
    ]
    for k, v in enumerate(block["variants"]):
        interval = "—" if v["ci_low"] is None else f"[{v['ci_low']:.4g}, {v['ci_high']:.4g}]"
        cells = [
            _figure(v["observed"], ".4g", 10),
            _figure(v["mean"], ".4g", 10),
            f"{interval:>23}",
            _figure(v["prob_best"], ".4f", 7),
            _figure(v["expected_loss"], ".2e", 9),
            _figure(v["p_value_always_valid"], ".4g", 9),
            f"{'—' if k == 0 else _bounds(v['lift_cs_low'], v['lift_cs_high']):>26}",
        ]
        if guardrail:
            cells.append(_figure(v["prob_worse_by_margin"], ".4f", 8))
        lines.append(f"  {v['variant']:<{width}}  {v['users']:>10,}  " + "  ".join(cells))
    return lines


def _segment_lines(dimension: str, segment: dict, width: int) -> list[str]:
    """One segment's table: the conversion of its users (for reading; it decides nothing)."""
    lines = [
        "",
        f"  {dimension} = {segment['segment']}",
        f"  {'variant':<{width}}  {'exposures':>10}  {'successes':>10}  {'mean':>7}  "
        f"{'95% credible interval':>21}  {'P(best)':>7}  {'exp. loss':>9}",
    ]
    for v in segment["variants"]:
        interval = f"[{v['ci_low']:.4f}, {v['ci_high']:.4f}]"
        lines.append(
            f"  {v['variant']:<{width}}  {v['exposures']:>10,}  {v['successes']:>10,}  "
            f"{v['mean']:>7.4f}  {interval:>21}  {v['prob_best']:>7.4f}  "
            f"{v['expected_loss']:>9.2e}"
        )
    return lines


def _figure(value: float | None, spec: str, width: int) -> str:
    return f"{'—' if value is None else format(value, spec):>{width}}"


def _bounds(low: float | None, high: float | None) -> str:
    """A lift interval in percent; an open end as ±∞."""
    ends = ("-∞" if low is None else f"{low:+.2%}", "+∞" if high is None else f"{high:+.2%}")
    return f"[{ends[0]}, {ends[1]}]"


def _number(value: float) -> str:
    """Counts-like α and β without decimals; fractional priors keep theirs."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


if __name__ == "__main__":
    sys.exit(main())
