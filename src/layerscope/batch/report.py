"""``report.html``: an index page of a run — one sortable row per item (thumbnail, class,
probability, correctness, status, links to its outputs) and the per-class mean-map grid."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from layerscope.batch import fs
from layerscope.batch.progress import plural

#: Rows shown at most (the manifest holds them all).
MAX_ROWS = 20_000

_SCRIPT = """
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0], i = th.cellIndex;
  const asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  const rows = Array.from(body.rows);
  const val = r => { const c = r.cells[i]; const v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
                     const n = parseFloat(v); return isNaN(n) ? v.toLowerCase() : n; };
  rows.sort((a, b) => { const x = val(a), y = val(b); return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; }
table { border-collapse: collapse; font-size: 13px; }
th { cursor: pointer; background: #eee; position: sticky; top: 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; }
td.ok { color: #060; } td.wrong { color: #b00; } td.err { color: #b00; }
img.thumb { width: 64px; image-rendering: pixelated; }
"""


def _cell(value: Any, sort: Any = None, cls: str = "") -> str:
    text = "" if value is None else html.escape(str(value))
    v = f' data-v="{html.escape(str(sort))}"' if sort is not None else ""
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}{v}>{text}</td>"


def write_report(run_dir: Any, table: Any, record: dict[str, Any]) -> Path | str:
    """Write ``run_dir/report.html`` from the merged manifest ``table`` and the run file."""
    rows = table.slice(0, MAX_ROWS).to_pylist()
    fp = record.get("fingerprint") or {}
    title = f"layerscope batch: {fp.get('model')} · {fp.get('method')} · {plural(table.num_rows, 'item')}"
    ok = sum(1 for r in rows if r["status"] == "ok")
    labelled = [r for r in rows if r["correct"] is not None]
    acc = f"{sum(r['correct'] for r in labelled) / len(labelled):.1%}" if labelled else "n/a"
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{ok} explained, {plural(len(rows) - ok, 'error')}; accuracy on labelled items: {acc}. "
        "Click a column title to sort.</p>",
    ]
    if table.num_rows > MAX_ROWS:
        out.append(f"<p>Only the first {MAX_ROWS} items are listed; manifest.parquet holds all {table.num_rows}.</p>")
    run_dir = fs.run_dir(run_dir)
    if run_dir.isfile("summary/mean_maps.png"):
        out.append(
            "<h2>Mean normalised map per class and layer</h2>"
            "<p>Rows: true class (correct and wrong predictions apart; the predicted class where the label is "
            "unknown); columns: layers in forward order.</p>"
            "<img src='summary/mean_maps.png' alt='per-class mean maps'>"
        )
    out.append("<h2>Items</h2><table><thead><tr>")
    for h in (
        "image",
        "key",
        "label",
        "predicted",
        "p(predicted)",
        "explained",
        "p(explained)",
        "correct",
        "status",
        "files",
    ):
        out.append(f"<th onclick='sortBy(this)'>{h}</th>")
    out.append("</tr></thead><tbody>")
    for r in rows:
        files = list(r.get("outputs") or [])
        thumb = next((f for f in files if f.startswith("thumbs/")), None)
        page = next((f for f in files if f.endswith(".html")), None)
        img = f"<img class='thumb' src='{html.escape(thumb)}' loading='lazy' alt=''>" if thumb else ""
        if page and img:
            img = f"<a href='{html.escape(page)}'>{img}</a>"
        links = " ".join(
            f"<a href='{html.escape(f)}'>{html.escape(f.rsplit('.', 1)[-1])}</a>"
            for f in files
            if not f.startswith("thumbs/")
        )
        correct = r["correct"]
        cls = "" if correct is None else ("ok" if correct else "wrong")
        status = r["status"]
        out.append(
            "<tr>"
            + f"<td>{img}</td>"
            + _cell(r["key"])
            + _cell(r["label_name"])
            + _cell(r["predicted_name"])
            + _cell(None if r["predicted_probability"] is None else f"{r['predicted_probability']:.3f}")
            + _cell(r["target_name"])
            + _cell(None if r["target_probability"] is None else f"{r['target_probability']:.3f}")
            + _cell("" if correct is None else ("yes" if correct else "no"), cls=cls)
            + _cell(status, cls="" if status == "ok" else "err")
            + f"<td>{links}</td></tr>"
        )
    out.append("</tbody></table></body></html>\n")
    run_dir.put("report.html", "\n".join(out).encode("utf-8"))
    p = run_dir.where("report.html")
    return p
