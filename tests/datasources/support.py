"""What datasources tests share: a real HTTP server on 127.0.0.1, real files, polling."""

from __future__ import annotations

import io
import random
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import BindParameter, Update
from waiting import poll_until

from datasources.tables import Entry


class Pages:
    """What the page server answers: path -> (status, headers, body); how many GETs
    each path had; and what to do (once) when a path is requested, before answering."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: Counter[str] = Counter()
        self.on_request: dict[str, Callable[[], None]] = {}

    def add(self, path: str, body: bytes, content_type: str = "text/html") -> str:
        self.routes[path] = (200, {"Content-Type": content_type}, body)
        return self.base + path

    def redirect(self, path: str, location: str) -> str:
        self.routes[path] = (302, {"Location": location}, b"")
        return self.base + path


@contextmanager
def serve_pages() -> Iterator[Pages]:
    """A real HTTP server on 127.0.0.1 serving the pages a test adds."""
    holder: dict[str, Pages] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            pages = holder["pages"]
            pages.requests[self.path] += 1
            hook = pages.on_request.pop(self.path, None)
            if hook is not None:
                hook()
            status, headers, body = pages.routes.get(
                self.path, (404, {"Content-Type": "text/plain"}, b"not found")
            )
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["pages"] = Pages(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder["pages"]
    server.shutdown()
    server.server_close()
    thread.join()


def get_entry(client: TestClient, datasource: str, entry: str) -> dict[str, Any]:
    """The entry as the API shows it now."""
    body: dict[str, Any] = client.get(f"/api/datasources/{datasource}/entries/{entry}").json()
    return body


def assert_given_back(client: TestClient, datasource: str, entry: str, stage: str) -> None:
    """The entry went back to the queue, waiting for ``stage``: not failed, its attempt
    not counted."""
    seen = get_entry(client, datasource, entry)
    assert (seen["status"], seen["stage"], seen["attempts"], seen["error"]) == (
        "pending",
        stage,
        0,
        None,
    ), seen


def wait_for_entry(client: TestClient, datasource: str, entry: str) -> dict[str, Any]:
    """Poll an entry until it is ready or failed."""

    def finished() -> dict[str, Any] | None:
        body = get_entry(client, datasource, entry)
        return body if body["status"] in ("ready", "failed") else None

    return poll_until(finished, detail=lambda: get_entry(client, datasource, entry))


def make_pdf(*paragraphs: str) -> bytes:
    """A real PDF with these paragraphs as text (fpdf2)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for text in paragraphs:
        pdf.multi_cell(0, 8, text)
        pdf.ln(4)
    return bytes(pdf.output())


def _pdf_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_padded_pdf(pages: list[str], padding: int, seed: int = 0) -> bytes:
    """A real PDF, written by hand: a page of text per item of ``pages`` (lines of at
    most 90 characters) and, on the first page, an image of ``padding`` random
    bytes stored uncompressed: as large as a scanned manual, yet quick to extract
    (text extraction never decodes images)."""
    side = max(1, int(padding**0.5))
    pixels = random.Random(seed).randbytes(side * side)
    kids = " ".join(f"{5 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Type /XObject /Subtype /Image /Width {side} /Height {side} /ColorSpace "
        f"/DeviceGray /BitsPerComponent 8 /Length {len(pixels)} >>\nstream\n".encode()
        + pixels
        + b"\nendstream",
    ]
    for i, text in enumerate(pages):
        lines = [text[n : n + 90] for n in range(0, len(text), 90)] or [""]
        shown = " T* ".join(f"({_pdf_text(line)}) Tj" for line in lines)
        content = f"BT /F1 11 Tf 14 TL 50 740 Td {shown} ET".encode()
        image = "/XObject << /Im1 4 0 R >> " if i == 0 else ""
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font "
            f"<< /F1 3 0 R >> {image}>> /Contents {6 + 2 * i} 0 R >>".encode()
        )
        objects.append(
            f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)


def make_docx(*paragraphs: str, table: list[list[str]] | None = None) -> bytes:
    """A real DOCX (python-docx)."""
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_docx_bomb(uncompressed_bytes: int, extra_members: int = 0) -> bytes:
    """A real DOCX whose ``word/document.xml`` holds about ``uncompressed_bytes`` of
    paragraphs that compress to almost nothing (a zip bomb), plus ``extra_members``
    copies of it under other names. Written to the zip in pieces: the expanded
    document never exists in memory."""
    template = zipfile.ZipFile(io.BytesIO(make_docx("seed")))
    document = template.read("word/document.xml").decode()
    head, _, rest = document.partition("<w:body>")
    _, _, tail = rest.partition("</w:body>")
    paragraph = ("<w:p><w:r><w:t>" + "bomb " * 200 + "</w:t></w:r></w:p>").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
        for info in template.infolist():
            if info.filename != "word/document.xml":
                bomb.writestr(info, template.read(info))
        names = [f"word/copy{n}.xml" for n in range(extra_members)] + ["word/document.xml"]
        for name in names:  # document.xml last: the last central directory entry
            with bomb.open(name, "w", force_zip64=False) as member:
                member.write((head + "<w:body>").encode())
                written = 0
                block = paragraph * 16
                while written < uncompressed_bytes:
                    member.write(block)
                    written += len(block)
                member.write(("</w:body>" + tail).encode())
    return out.getvalue()


def make_zip(members: int) -> bytes:
    """A zip with ``members`` tiny members, one of them ``word/document.xml``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        for n in range(members - 1):
            archive.writestr(f"m/{n}.txt", "x")
    return out.getvalue()


def set_values(clause: Update, given: list[dict[str, Any]]) -> dict[str, Any]:
    """The values an UPDATE sets, by column: bound in the statement, or when it is
    executed (the lease queue binds the values of its writes then)."""
    bound: dict[str, Any] = {}
    for params in given:
        bound.update(params or {})
    values: dict[str, Any] = {}
    for column, value in clause._values.items():
        if isinstance(value, BindParameter):
            value = bound.get(value.key, value.value)
        values[str(getattr(column, "key", column))] = value
    return values


def lease_until(client: TestClient, entry: str) -> datetime | None:
    """An entry's lease end as stored, made aware (SQLite keeps it naive, in UTC)."""
    state: Any = client.app.state.api  # type: ignore[attr-defined]
    with state.db() as db:
        found = db.get(Entry, entry)
        assert found is not None
        moment: datetime | None = found.lease_until
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)
