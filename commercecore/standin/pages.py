"""The hosted checkout page of the stand-in: plain HTML and a form, no script, nothing from a CDN."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from commercecore.standin.state import money

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1a1f36}
.badge{display:inline-block;background:#ffd79d;border-radius:4px;padding:.1rem .5rem;font-size:.8rem}
table{width:100%;border-collapse:collapse;margin:1.5rem 0}td{padding:.4rem 0;border-bottom:1px solid #e3e8ee}
td.n{text-align:right}tr.total td{font-weight:600;border-bottom:none}
fieldset{border:1px solid #e3e8ee;border-radius:6px;margin:1rem 0}
button{font-size:1rem;padding:.6rem 1.4rem;border-radius:6px;border:0;cursor:pointer;margin-right:.5rem}
button.pay{background:#635bff;color:#fff}button.decline{background:#e3e8ee;color:#1a1f36}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body><p><span class="badge">Stripe stand-in · test mode</span></p>{body}</body></html>\n'
    )


def checkout_page(session: Mapping[str, Any], lines: Sequence[Mapping[str, Any]]) -> str:
    session_id = html.escape(str(session["id"]))
    currency = str(session.get("currency") or "")
    rows = "".join(
        f"<tr><td>{html.escape(str(line['description']))} &times; {int(line['quantity'])}</td>"
        f'<td class="n">{html.escape(money(int(line["amount_total"]), currency))}</td></tr>'
        for line in lines
    )
    total = html.escape(money(int(session.get("amount_total") or 0), currency))
    return _page(
        "Checkout",
        f"<h1>Checkout</h1><table>{rows}"
        f'<tr class="total"><td>Total</td><td class="n">{total}</td></tr></table>'
        f'<form method="post" action="/pay/{session_id}">'
        "<fieldset><legend>Payment method</legend>"
        '<label><input type="radio" name="method" value="card" checked> Card (paid at once)</label><br>'
        '<label><input type="radio" name="method" value="sepa_debit"> Bank debit (confirmed later)</label>'
        "</fieldset>"
        '<button class="pay" type="submit" name="action" value="pay">Pay</button>'
        '<button class="decline" type="submit" name="action" value="decline">Decline</button>'
        "</form>",
    )


def closed_page(session: Mapping[str, Any]) -> str:
    status = str(session.get("status"))
    text = {
        "complete": "This checkout is complete.",
        "expired": "This checkout has expired: start a new one from the shop.",
    }.get(status, f"This checkout is {html.escape(status)}.")
    return _page("Checkout", f"<h1>Checkout</h1><p>{text}</p>")


def message_page(title: str, text: str) -> str:
    return _page(title, f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>")
