"""Score history across commits: a SQLite store of every recorded unit's score, uncertainty and
per-item predictions keyed by commit and machine (`store`), the series per unit along a
branch's first-parent commits (`series`), steps found by an uncertainty-weighted segmentation
and confirmed by the paired test (`changes`), the drop gate over a commit range (`gate`), and
their renderings (`render`, `figure`, `page`)."""
