"""Plots the README's analysis-at-scale curve (docs/img/analysis-scale.png) from the figures
`pinpipe bench analysis --posts N` printed (the table below, copied from the README)."""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# posts (millions): (pinpipe s, pinpipe peak MB, duckdb s, duckdb peak MB, one-pass s, one-pass MB)
FIGURES = {
    1: (1.88, 458, 3.51, 906, 1.51, 619),
    5: (8.42, 604, 15.20, 4016, 7.0, 2205),
    20: (35.55, 786, 70.93, 15094, 38.31, 8067),
}


def main(out):
    n = sorted(FIGURES)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col, label in ((a, 0, "analysis time (s)"), (b, 1, "peak RSS (MB)")):
        ax.plot(n, [FIGURES[x][col] for x in n], "o-", label="pinpipe (in parts by ind, spilled)")
        ax.plot(n, [FIGURES[x][col + 2] for x in n], "s--", label="DuckDB, same queries")
        prev = [(x, FIGURES[x][col + 4]) for x in n if FIGURES[x][col + 4] is not None]
        ax.plot([p[0] for p in prev], [p[1] for p in prev], "x:", label="pinpipe in one pass (previous)")
        ax.set_xlabel("posts (millions)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    b.axhline(10240, color="grey", lw=0.8)
    b.text(1, 10400, "Lambda maximum memory (10,240 MB)", fontsize=8)
    a.legend(fontsize=8)
    fig.suptitle("pinpipe bench analysis (2-core machine)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/analysis-scale.png")
