"""The data funnel: what each stage took in, added, kept, dropped (by reason) and quarantined."""

from __future__ import annotations


def funnel(manifests: list[dict]) -> list[dict]:
    """One row per stage, in pipeline order, from the stages' manifests."""
    rows = []
    for m in manifests:
        ledger = m["ledger"]
        added = ledger.get("added", {})  # rows a stage made itself (augment), by kind
        reasons = [*(f"{reason} {n}" for reason, n in sorted(ledger["dropped"].items())),
                   *(f"{kind} +{n}" for kind, n in sorted(added.items()))]
        dropped = ", ".join(reasons) or "-"
        rows.append(
            {
                "stage": m["stage"],
                "rows_in": ledger["rows_in"],
                "added": sum(added.values()),
                "rows_out": ledger["rows_out"],
                "dropped": sum(ledger["dropped"].values()),
                "quarantined": ledger["quarantined"],
                "reasons": dropped,
                "key": m["key"],
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table for the terminal."""
    if not rows:
        return "(empty)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = lambda values: "  ".join(str(v).ljust(widths[c]) for c, v in zip(cols, values))  # noqa: E731
    return "\n".join([line(cols), line("-" * widths[c] for c in cols), *(line(r[c] for c in cols) for r in rows)])
