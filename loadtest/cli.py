"""`python -m loadtest run|sweep`: one load level with an SLO verdict, or a sweep over
concurrency levels (closed loop) or arrival rates (open loop) with a throughput-vs-latency plot.
`--protocol` picks the way in: the API's /predict endpoints (http), or the Open Inference
Protocol's infer with the model's preprocessed tensors over REST (v2-json, v2-binary) or gRPC.
Each run reads the server's /metrics before and after and reports its split of the latency
(queue, compute input, compute infer, compute output) beside the client's.

Exit status: 0 when the run met its SLO with no failures (a sweep: every level ran), 1 when it
did not (or Locust failed), 2 for usage errors, a host that is not ready, and a model,
protocol or batch the server refuses.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from loadtest.protocols import (
    MAX_BATCH,
    PROTOCOLS,
    Target,
    TargetError,
    default_grpc_target,
    http_target,
    prepare_tensor_target,
)
from loadtest.runner import DEFAULT_WEIGHTS, Summary, parse_duration, parse_weights, run_locust
from loadtest.server_stats import format_split

DEFAULT_SWEEP_USERS = "1,2,4,8,16,32,64,128"
READY_TIMEOUT_S = 5.0
ENDPOINT_WIDTH = 16  # the longest endpoint name printed beside its figures


class HostNotReady(Exception):
    """GET {host}/readyz did not answer 200."""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _weights(text: str) -> str:
    try:
        parse_weights(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
        return value

    return convert


def _levels(kind: type[int] | type[float]) -> Callable[[str], list[float]]:
    def convert(text: str) -> list[float]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list")
        return [_positive(kind)(item) for item in items]

    return convert


def check_ready(host: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Raise HostNotReady unless GET {host}/readyz answers 200 within timeout_s."""
    url = f"{host.rstrip('/')}/readyz"
    # No proxies: the target is a local server, and an HTTP(S)_PROXY would misroute it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise HostNotReady(f"host not ready: GET {url}: {reason}") from None
    if status != 200:
        raise HostNotReady(f"host not ready: GET {url} answered {status}")


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def format_summary(summary: Summary) -> str:
    """The one-screen report of a run."""
    load = (
        f"{summary.users} users, closed loop"
        if summary.rate is None
        else f"open loop, {summary.rate:g} requests/s from {summary.users} users"
    )
    failures = (
        ", ".join(f"{status}: {count}" for status, count in summary.failures_by_status.items())
        or "none"
    )
    lines = [f"host        {summary.host}"]
    if summary.protocol != "http":
        server = summary.server or {}
        model = f" {server['model']} {server['version']}" if server else ""
        rows = summary.batch or 1
        lines.append(
            f"protocol    {summary.protocol}{model}, {rows} row{'s' if rows != 1 else ''} "
            "per request"
        )
    lines += [
        f"load        {load}, {summary.duration_s:g} s",
        f"requests    {summary.requests:,} ({summary.rps:,.1f}/s), "
        f"failures {summary.failures:,} ({failures})",
        f"success     {summary.success_rps:,.1f} requests/s",
        f"latency ms  p50 {_ms(summary.p50_ms)}  p95 {_ms(summary.p95_ms)}  "
        f"p99 {_ms(summary.p99_ms)}  max {_ms(summary.max_ms)}",
    ]
    width = max((len(name) for name in summary.endpoints), default=0)
    for name, row in summary.endpoints.items():
        figures = (
            f"{int(row['requests']):>8,} requests  "
            f"{int(row['failures']):>6,} failed  {row['rps']:>9,.1f}/s  "
            f"p50 {_ms(row['p50_ms'])}  p99 {_ms(row['p99_ms'])} ms"
        )
        if width <= ENDPOINT_WIDTH:
            lines.append(f"  {name:<{width}}  {figures}")
        else:  # a V2 path or the gRPC method: its figures on a line of their own
            lines += [f"  {name}", f"  {'':<{ENDPOINT_WIDTH}}  {figures}"]
    if summary.images_per_s is not None:
        lines.append(f"images/s    {summary.images_per_s:,.1f} (successful /predict/batch)")
    if summary.tensors_per_s is not None:
        lines.append(
            f"tensors/s   {summary.tensors_per_s:,.1f} (rows of successful requests, "
            f"{summary.batch} per request)"
        )
    if summary.server is not None:
        lines += format_split(summary.server)
    if summary.server_note is not None:
        lines.append(f"note        {summary.server_note}")
    if summary.slo_p99_ms is None:
        verdict = "no SLO given; " + ("no failures" if summary.failures == 0 else "FAILURES")
    else:
        reasons = []
        if summary.p99_ms > summary.slo_p99_ms:
            reasons.append(f"p99 {_ms(summary.p99_ms)} ms > {summary.slo_p99_ms:g} ms")
        if summary.failures:
            reasons.append(f"{summary.failures:,} failures")
        verdict = (
            f"PASS (p99 {_ms(summary.p99_ms)} ms <= {summary.slo_p99_ms:g} ms, no failures)"
            if summary.slo_met
            else "FAIL (" + "; ".join(reasons) + ")"
        )
    lines.append(f"SLO         {verdict}")
    return "\n".join(lines)


SWEEP_COLUMNS = [
    "users",
    "rate",
    "requests",
    "failures",
    "rps",
    "success_rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "images_per_s",
    "tensors_per_s",
    "protocol",
    "server_latency_ms",
    "unaccounted_ms",
]


def _column(summary: Summary, column: str) -> object:
    if column in ("server_latency_ms", "unaccounted_ms"):
        return (summary.server or {}).get(column)
    return getattr(summary, column)


def write_sweep_csv(path: Path, summaries: Sequence[Summary]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(SWEEP_COLUMNS)
        for s in summaries:
            row = [_column(s, column) for column in SWEEP_COLUMNS]
            writer.writerow(["" if value is None else value for value in row])


def sweep_table(summaries: Sequence[Summary]) -> str:
    """A markdown table: one row per level."""
    open_loop = any(s.rate is not None for s in summaries)
    batch = any(s.images_per_s is not None for s in summaries)
    tensors = any(s.tensors_per_s is not None for s in summaries)
    head = ["users", *(["rate/s"] if open_loop else []), "success rps"]
    head += [*(["images/s"] if batch else []), *(["tensors/s"] if tensors else [])]
    head += ["p50 ms", "p95 ms", "p99 ms", "failures"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for s in summaries:
        failures = f"{s.failures:,}"
        if s.failures_by_status:
            failures += " (" + ", ".join(f"{k}: {v:,}" for k, v in s.failures_by_status.items())
            failures += ")"
        cells = [str(s.users), *([f"{s.rate:g}"] if open_loop else []), f"{s.success_rps:,.1f}"]
        if batch:
            cells.append("" if s.images_per_s is None else f"{s.images_per_s:,.0f}")
        if tensors:
            cells.append("" if s.tensors_per_s is None else f"{s.tensors_per_s:,.0f}")
        cells += [_ms(s.p50_ms), _ms(s.p95_ms), _ms(s.p99_ms), failures]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(
    path: Path, summaries: Sequence[Summary], *, title: str, slo_p99_ms: float | None = None
) -> None:
    """Throughput vs latency, as Triton's perf_analyzer draws it: achieved successful
    requests/s on x, p50/p95/p99 latency on y, each point labelled with its load level."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure = Figure(figsize=(9, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = [s.success_rps for s in summaries]
    series = [
        ("p50", "p50_ms", "o", "tab:blue"),
        ("p95", "p95_ms", "s", "tab:orange"),
        ("p99", "p99_ms", "^", "tab:red"),
    ]
    for label, key, marker, color in series:
        y = [getattr(s, key) for s in summaries]
        axes.plot(x, y, marker=marker, color=color, label=label, linewidth=1.5, markersize=6)
    for s in summaries:
        level = f"{s.rate:g}/s" if s.rate is not None else f"u={s.users}"
        if s.failures:
            level += f" ({s.failures:,} failed)"
        axes.annotate(
            level,
            (s.success_rps, s.p99_ms),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
            color="black",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "lw": 0},
        )
    if slo_p99_ms is not None:
        axes.axhline(slo_p99_ms, color="gray", linestyle="--", linewidth=1, label="p99 SLO")
    latencies = [v for s in summaries for v in (s.p50_ms, s.p99_ms) if v > 0]
    # A sweep into overload spans decades of latency: a log axis keeps the low end readable.
    if latencies and max(latencies) / min(latencies) > 30:
        axes.set_yscale("log")
        # Plain numbers at 1-2-5 steps, not 10^n: latencies are read off, not estimated.
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    else:
        axes.set_ylim(bottom=0)
    axes.set_xlim(left=0, right=max(x, default=1) * 1.12 or 1)
    axes.set_xlabel("throughput: successful requests/s")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.35)
    axes.legend(loc="upper left")
    figure.savefig(path)


def _target(args: argparse.Namespace, out: Path) -> Target | None:
    """The model version the run drives (and, for the tensor protocols, its tensors, written
    to `out`, and one request sent the way the run will); None after printing why not."""
    try:
        if args.protocol == "http":
            return http_target(args.host, args.model)
        return prepare_tensor_target(
            args.host,
            args.protocol,
            model=args.model,
            batch=args.batch,
            out_dir=out,
            grpc_target=args.grpc_target,
        )
    except TargetError as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    try:
        check_ready(args.host)
    except HostNotReady as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 2
    target = _target(args, args.out)
    if target is None:
        return 2
    try:
        summary = run_locust(
            args.host,
            users=args.users,
            duration_s=args.duration,
            out_dir=args.out,
            rate=args.rate,
            weights=args.weights,
            batch_size=args.batch_size,
            model=args.model,
            slo_p99_ms=args.slo_p99_ms,
            target=target,
        )
    except RuntimeError as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"reports     {args.out}/summary.json, {args.out}/report.html")
    return 0 if summary.slo_met else 1


def _sweep(args: argparse.Namespace) -> int:
    if args.rates is not None:
        if len(args.users) != 1:
            print("loadtest: with --rates, --users is one number (the generators)", file=sys.stderr)
            return 2
        generators = int(args.users[0]) if args.users_given else 8
        levels: list[tuple[int, float | None]] = [(generators, float(rate)) for rate in args.rates]
    else:
        levels = [(int(users), None) for users in args.users]
    try:
        check_ready(args.host)
    except HostNotReady as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    target = _target(args, out)
    if target is None:
        return 2
    summaries: list[Summary] = []
    status = 0
    for number, (users, rate) in enumerate(levels, 1):
        name = f"u{users}" if rate is None else f"r{rate:g}"
        try:
            summary = run_locust(
                args.host,
                users=users,
                duration_s=args.duration,
                out_dir=out / name,
                rate=rate,
                weights=args.weights,
                batch_size=args.batch_size,
                model=args.model,
                slo_p99_ms=args.slo_p99_ms,
                target=target,
            )
        except RuntimeError as error:
            # Keep what was measured: the levels before this one still get their table.
            print(f"loadtest: level {name}: {error}", file=sys.stderr)
            status = 1
            break
        summaries.append(summary)
        level = f"users {users:>4}" if rate is None else f"rate {rate:>7g}/s"
        print(
            f"[{number}/{len(levels)}] {level}: {summary.success_rps:9,.1f} ok/s  "
            f"p50 {_ms(summary.p50_ms):>6}  p95 {_ms(summary.p95_ms):>6}  "
            f"p99 {_ms(summary.p99_ms):>6} ms  failures {summary.failures:,}",
            flush=True,
        )
    if not summaries:
        return status
    table = sweep_table(summaries)
    write_sweep_csv(out / "sweep.csv", summaries)
    kind = "closed loop" if args.rates is None else f"open loop, {levels[0][0]} generators"
    way = (
        args.weights
        if args.protocol == "http"
        else f"{args.protocol} {target.model} {target.version} batch {args.batch}"
    )
    title = f"{args.host} {way}: {kind}, {args.duration:g} s per level"
    (out / "sweep.md").write_text(f"{title}\n\n{table}\n")
    (out / "sweep.json").write_text(
        json.dumps([json.loads(s.to_json()) for s in summaries], indent=2) + "\n"
    )
    plot_sweep(out / "sweep.png", summaries, title=title, slo_p99_ms=args.slo_p99_ms)
    print()
    print(table)
    if args.slo_p99_ms is not None:
        within = [s for s in summaries if s.slo_met]
        if within:
            best = max(within, key=lambda s: s.success_rps)
            at = f"{best.users} users" if best.rate is None else f"{best.rate:g}/s"
            print(
                f"\nbest within p99 <= {args.slo_p99_ms:g} ms and no failures: "
                f"{best.success_rps:,.1f} requests/s at {at}"
            )
        else:
            print(f"\nno level met p99 <= {args.slo_p99_ms:g} ms with no failures")
    print(f"\nwrote {out}/sweep.csv, sweep.md, sweep.png")
    return status


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options, or None."""
    if args.batch_size is not None and not 1 <= args.batch_size <= 64:
        return "--batch-size must be in 1..64"
    if not 1 <= args.batch <= MAX_BATCH:
        return f"--batch must be in 1..{MAX_BATCH}"
    if args.protocol == "http":
        if args.batch != 1:
            return (
                "--batch is the rows per V2/gRPC request; with --protocol http, batch "
                "/predict/batch with --weights batch=1 --batch-size N"
            )
        if args.grpc_target is not None:
            return "--grpc-target needs --protocol grpc"
        return None
    if args.weights is not None or args.batch_size is not None:
        option = "--weights" if args.weights is not None else "--batch-size"
        return (
            f"{option} picks /predict endpoints (--protocol http); --protocol {args.protocol} "
            "sends one kind of request: set its rows with --batch"
        )
    if args.grpc_target is not None and args.protocol != "grpc":
        return "--grpc-target needs --protocol grpc"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser, duration: str) -> None:
        sub.add_argument("--host", required=True, help="base URL, e.g. http://127.0.0.1:3000")
        sub.add_argument(
            "--duration",
            type=_duration,
            default=parse_duration(duration),
            help=f"per run: 30s, 2m, 45 (seconds); default {duration}",
        )
        sub.add_argument(
            "--protocol",
            choices=PROTOCOLS,
            default="http",
            help="http: the /predict endpoints with PNG files (--weights); v2-json, v2-binary: "
            "POST /v2/models/{model}/versions/{v}/infer with the model's preprocessed tensors "
            "as JSON values or with the binary tensor extension; grpc: ModelInfer over gRPC "
            "(--grpc-target). Default http",
        )
        sub.add_argument(
            "--weights",
            type=_weights,
            help="--protocol http: users per endpoint (predict, batch, json, explain), e.g. "
            f"predict=8,batch=1,json=1 (default {DEFAULT_WEIGHTS})",
        )
        sub.add_argument(
            "--batch-size",
            type=int,
            help="--protocol http: images per /predict/batch request (32)",
        )
        sub.add_argument(
            "--batch",
            type=int,
            default=1,
            help=f"v2-json, v2-binary, grpc: tensor rows (images) per request, 1..{MAX_BATCH} "
            "(default 1; the server's own limit applies)",
        )
        sub.add_argument(
            "--grpc-target",
            metavar="HOST:PORT",
            help="--protocol grpc: the gRPC address (default: --host's address, port 8001)",
        )
        sub.add_argument(
            "--model",
            help="the model driven: the model field of every /predict request, or the V2/gRPC "
            "model name (default: the server's default model, its highest version)",
        )
        sub.add_argument("--slo-p99-ms", type=_positive(float), help="p99 latency objective in ms")
        sub.add_argument("--out", type=Path, required=True, help="output directory")

    run = commands.add_parser("run", help="one load level, with an SLO verdict")
    common(run, "30s")
    run.add_argument("--users", type=_positive(int), default=8, help="concurrent users (8)")
    run.add_argument(
        "--rate", type=_positive(float), help="open loop: requests/s in total (default: closed)"
    )

    sweep = commands.add_parser("sweep", help="several levels; writes sweep.csv/.md/.png")
    common(sweep, "10s")
    sweep.add_argument(
        "--users",
        type=_levels(int),
        help=f"closed loop: the user counts ({DEFAULT_SWEEP_USERS}); with --rates: the "
        "number of arrival generators (8)",
    )
    sweep.add_argument(
        "--rates", type=_levels(float), help="open loop: the arrival rates (requests/s) instead"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = usage_problem(args)
    if problem:
        parser.error(problem)
    args.weights = args.weights or DEFAULT_WEIGHTS
    args.batch_size = 32 if args.batch_size is None else args.batch_size
    if args.protocol == "grpc" and args.grpc_target is None:
        args.grpc_target = default_grpc_target(args.host)
    if args.command == "run":
        return _run(args)
    args.users_given = args.users is not None
    if args.users is None:
        args.users = [8] if args.rates is not None else _levels(int)(DEFAULT_SWEEP_USERS)
    return _sweep(args)
