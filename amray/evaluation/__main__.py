"""`python -m amray.evaluation compare A/summary.json B/summary.json [--labels a b] --output cmp.png`

(Running the benchmarks themselves is `python jobs/evaluate.py`.)
"""

from __future__ import annotations

import argparse
import sys

from amray.evaluation.compare import bar_chart, comparison_table, default_labels, load_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amray.evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="table + bar chart of several summary.json files")
    cmp.add_argument("summaries", nargs="+", help="summary.json of each model, in order")
    cmp.add_argument("--labels", nargs="+", help="one name per summary (default: the model each names)")
    cmp.add_argument("--output", help="bar chart PNG to write")
    args = parser.parse_args(argv)
    try:
        summaries = [load_summary(p) for p in args.summaries]
    except (OSError, ValueError) as e:
        parser.error(str(e))
    if args.labels and len(args.labels) != len(summaries):
        parser.error(f"--labels: {len(args.labels)} labels for {len(summaries)} summaries")
    labels = args.labels or default_labels(args.summaries, summaries)
    print(comparison_table(labels, summaries))
    if args.output:
        print(f"bar chart: {bar_chart(labels, summaries, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
