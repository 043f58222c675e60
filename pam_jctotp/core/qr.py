"""What a user scans: the otpauth:// URI, its QR code in the terminal, the key.

segno encodes the QR code; this module only draws its matrix with Unicode
half blocks (two rows of modules per line of text) so a phone camera reads it
from an ordinary terminal. Dark modules are drawn as spaces on a light
background inverted: we print light modules as blocks, which works on the
common dark-background terminal and on light ones alike thanks to the quiet zone.
"""

from __future__ import annotations

import urllib.parse

from ..secret import Secret

_HALF = {
    (False, False): "\u2588",  # both light  -> full block (drawn light)
    (True, False): "\u2584",   # top dark    -> lower half block
    (False, True): "\u2580",   # bottom dark -> upper half block
    (True, True): " ",         # both dark   -> blank
}


def otpauth_uri(secret: Secret, account: str, issuer: str, digits: int, period: int) -> str:
    label = urllib.parse.quote(f"{issuer}:{account}", safe="@:")
    query = urllib.parse.urlencode({
        "secret": secret.reveal(), "issuer": issuer, "algorithm": "SHA1",
        "digits": str(digits), "period": str(period),
    }, quote_via=urllib.parse.quote)
    return f"otpauth://totp/{label}?{query}"


def grouped_key(secret: Secret) -> str:
    key = secret.reveal()
    return " ".join(key[i:i + 4] for i in range(0, len(key), 4))


def terminal_qr(data: str, border: int = 2) -> str:
    """The QR code of `data` as lines of Unicode half blocks."""
    import segno  # here, not at the top: only enrollment draws one (2.6 MB of RSS)

    qr = segno.make(data, error="m", micro=False)
    rows = [[bool(m) for m in row] for row in qr.matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        lines.append("".join(_HALF[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return "\n".join(lines)


def terminal_qr_bound(data: str, border: int = 2) -> int:
    """Bytes that terminal_qr(data) takes at most, in a fifth of its time: the symbol's
    size does not depend on its mask (choosing the best of eight is most of the cost),
    and each character is at most a three-byte block."""
    import segno

    qr = segno.make(data, error="m", micro=False, mask=0)
    width = int(qr.symbol_size(scale=1, border=border)[0])
    lines = (width + 1) // 2
    return lines * 3 * width + lines - 1
