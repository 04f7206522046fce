"""Gateway Lite CSV imports (spec/gateway-lite.rst, Importing Gateway Lite Devices).

The upload answers at once with a `pending` record; a background job parses and checks the whole file
(off the event loop), then writes the gateways in batches of `gateway_lite.import_batch_rows`, each its
own short transaction, so MQTT and REST keep being served and `processed_rows` moves. All or nothing:
any bad row fails the import before anything is written, and a batch refused by the database (an euid
registered meanwhile) removes the rows the import already wrote. A server stopped mid-import does the
same when it starts again (`recover_imports`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.context import Context
from handlers.devices import RESERVED_USERNAMES, USERNAME_RE
from handlers.errors import Conflict, Forbidden, InvalidPayload, NotFound
from handlers.principal import Principal
from handlers.products import seen_product
from handlers.secrets import keyed_digest
from handlers.tenancy import as_uuid, seen_customer, seen_partner
from handlers.views import Timestamp, View
from models.devices import Device
from models.gateway_lite import GatewayLite, GatewayLiteImport

log = logging.getLogger(__name__)

HEADER = ["Product Serial Number", "FW Code", "Nabto DeviceId", "InstallCode"]
HEADER_TEXT = ";".join(f'"{h}"' for h in HEADER)
LIMITS = {"FW Code": 64, "Nabto DeviceId": 128, "InstallCode": 200}
MAX_REPORTED = 100
Tag = Annotated[str, StringConstraints(min_length=1, max_length=50)]


class ImportForm(BaseModel):
    """The multipart fields besides `csv_file`. Lists: the field repeated, or one field holding a JSON array."""

    product_id: uuid.UUID
    tags: list[Tag] = Field(default_factory=list, max_length=100)
    customer_scopes: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    partner_scopes: list[uuid.UUID] = Field(default_factory=list, max_length=1000)


class ImportUpload(ImportForm):
    """multipart/form-data: `csv_file` (the file) and the fields of ImportForm (documentation only:
    the adapter reads the parts itself)."""

    csv_file: bytes = Field(json_schema_extra={"format": "binary"}, description=f"`;`-delimited, header {HEADER_TEXT}")


class ImportView(View):
    id: str
    created: Timestamp
    modified: Timestamp
    csv_file: str = Field(description="the uploaded file's name")
    product_id: str
    status: str = Field(json_schema_extra={"enum": ["pending", "processing", "completed", "failed"]})
    customer_scopes: list[str]
    partner_scopes: list[str]
    error_message: str = Field(description="each bad row: line number and reason (the first 100)")
    partner_id: str | None
    tags: list[str]
    total_rows: int
    processed_rows: int


class ImportList(View):
    count: int
    results: list[ImportView]


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    euid: str
    fw_code: str
    nabto_device_id: str
    install_code_hash: str


def import_view(rec: GatewayLiteImport) -> dict[str, object]:
    return {
        "id": str(rec.id),
        "created": rec.created,
        "modified": rec.modified,
        "csv_file": rec.csv_file,
        "product_id": str(rec.product_id),  # type: ignore[attr-defined]
        "status": rec.status,
        "customer_scopes": rec.customer_scopes,
        "partner_scopes": rec.partner_scopes,
        "error_message": rec.error_message,
        "partner_id": str(rec.partner_id) if rec.partner_id else None,  # type: ignore[attr-defined]
        "tags": rec.tags,
        "total_rows": rec.total_rows,
        "processed_rows": rec.processed_rows,
    }


# --- the file --------------------------------------------------------------------------------------


def install_code_digest(key: str, code: str) -> str:
    return keyed_digest(key, "install-code", code)


def parse_csv(data: bytes, key: str) -> tuple[list[Row], list[str]]:
    """The rows, or the problems (line number and reason); installation codes digested with the
    server's `key`. Runs in a thread: 100,000 rows take a while."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [f"the file is not UTF-8 text (byte {exc.start} cannot be decoded)"]
    if "\x00" in text:
        return [], ["the file is not a CSV text file (it contains NUL bytes)"]
    first = text.split("\n", 1)[0]
    if ";" not in first and "," in first:
        return [], [f"line 1: the delimiter must be ';' (the header reads {first[:200]!r})"]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True)
    rows: list[Row] = []
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    try:
        header = next(reader, None)
        if header != HEADER:
            got = ";".join(header or [])[:200]
            hint = " (the delimiter must be ';')" if header and len(header) == 1 and "," in header[0] else ""
            return [], [f"line 1: the header must be exactly {HEADER_TEXT}, got {got!r}{hint}"]
        for fields in reader:
            line = reader.line_num
            if not fields or fields == [""]:
                continue  # blank line
            problem = _row_problem(fields)
            if problem is None:
                euid = fields[0]
                if euid in first_seen:
                    problem = f"euid {euid} repeats line {first_seen[euid]}"
                else:
                    first_seen[euid] = line
            if problem:
                problems.append(f"line {line}: {problem}")
                continue
            if not problems:
                rows.append(Row(line, fields[0], fields[1], fields[2], install_code_digest(key, fields[3])))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: not valid CSV ({exc})")
    if not rows and not problems:
        problems.append("the file has no rows after the header")
    return (rows if not problems else []), problems


def _row_problem(fields: list[str]) -> str | None:
    if len(fields) != len(HEADER):
        return f"{len(fields)} fields, not {len(HEADER)} (delimiter ';')"
    for name, value in zip(HEADER, fields, strict=True):
        if not value.strip():
            return f"empty {name}"
        if value != value.strip():
            return f"{name} has leading or trailing spaces"
        if name in LIMITS and len(value) > LIMITS[name]:
            return f"{name} is longer than {LIMITS[name]} characters"
    euid = fields[0]
    if not USERNAME_RE.fullmatch(euid) or euid.lower() in RESERVED_USERNAMES:
        return f"Product Serial Number {euid[:40]!r} is not a valid euid (1-128 of A-Z a-z 0-9 : . _ -)"
    return None


def report(problems: list[str]) -> str:
    shown = problems[:MAX_REPORTED]
    more = len(problems) - len(shown)
    return "\n".join(shown + ([f"... and {more} more"] if more else []))


# --- the routes ------------------------------------------------------------------------------------


def imports_seen_by(principal: Principal) -> dict[str, Any]:
    return {} if principal.is_admin else {"partner_id__in": list(principal.partners)}


def _importer(principal: Principal) -> None:
    if not (principal.is_admin or (principal.account_type == "partner" and principal.partner_id)):
        raise Forbidden("only gooee and partner users import gateways", code="permission_denied")


async def create_import(
    ctx: Context, principal: Principal, form: ImportForm, filename: str, data: bytes
) -> dict[str, object]:
    _importer(principal)
    if not filename:
        raise InvalidPayload("csv_file: a file is required", code="invalid_schema",
                             errors=[{"field": "csv_file", "message": "a file is required"}])  # fmt: skip
    product = await seen_product(principal, form.product_id)
    for cid in form.customer_scopes:
        await seen_customer(principal, str(cid), "customer_scopes")
    for pid in form.partner_scopes:
        await seen_partner(principal, str(pid), "partner_scopes")
    partner_id = principal.partner_id or (str(product.partner_id) if product.partner_id else None)  # type: ignore[attr-defined]
    rec = await GatewayLiteImport.create(
        csv_file=filename[:255],
        product=product,
        partner_id=partner_id,
        created_by_id=principal.user_id,
        tags=list(dict.fromkeys(form.tags)),
        customer_scopes=[str(c) for c in dict.fromkeys(form.customer_scopes)],
        partner_scopes=[str(p) for p in dict.fromkeys(form.partner_scopes)],
    )
    task = asyncio.create_task(run_import(ctx, rec.id, data), name=f"import {rec.id}")
    ctx.jobs.add(task)
    task.add_done_callback(ctx.jobs.discard)
    return import_view(rec)


async def _seen_import(principal: Principal, import_id: str) -> GatewayLiteImport:
    _importer(principal)
    rec = await GatewayLiteImport.filter(id=as_uuid(import_id, "import"), **imports_seen_by(principal)).first()
    if rec is None:
        raise NotFound(f"import {import_id} not found", code="import_not_found")
    return rec


async def list_imports(principal: Principal) -> dict[str, object]:
    _importer(principal)
    rows = await GatewayLiteImport.filter(**imports_seen_by(principal)).order_by("-created")
    return {"count": len(rows), "results": [import_view(r) for r in rows]}


async def get_import(principal: Principal, import_id: str) -> dict[str, object]:
    return import_view(await _seen_import(principal, import_id))


async def delete_import(principal: Principal, import_id: str) -> None:
    """The record goes; the gateways it imported stay. Not while it runs (409)."""
    rec = await _seen_import(principal, import_id)
    if rec.status in ("pending", "processing"):
        raise Conflict(f"import {import_id} is still {rec.status}", code="import_in_progress")
    await rec.delete()


# --- the job ---------------------------------------------------------------------------------------


async def run_import(ctx: Context, import_id: uuid.UUID, data: bytes) -> None:
    try:
        await _run(ctx, import_id, data)
    except asyncio.CancelledError:
        raise
    except Exception:  # never left "processing": the record says it failed, the log says why
        log.exception("import %s failed", import_id)
        await _undo(import_id)
        await _finish(import_id, "failed", "the import stopped on an internal error; nothing was imported")


async def _run(ctx: Context, import_id: uuid.UUID, data: bytes) -> None:
    rec = await GatewayLiteImport.get(id=import_id)
    await GatewayLiteImport.filter(id=import_id).update(status="processing")
    rows, problems = await asyncio.to_thread(parse_csv, data, ctx.jwt_secret)
    del data
    if not problems:
        problems = await _registered(rows)
    if problems:
        await _finish(import_id, "failed", report(problems))
        return
    await GatewayLiteImport.filter(id=import_id).update(total_rows=len(rows))
    size = ctx.gateway_lite.import_batch_rows
    metadata = {"tags": rec.tags} if rec.tags else {}
    for start in range(0, len(rows), size):
        batch = rows[start : start + size]
        try:
            await _write(rec, batch, metadata)
        except IntegrityError:
            await _undo(import_id)
            lines = f"lines {batch[0].line}-{batch[-1].line}"
            problems = await _registered(batch) or [f"{lines}: refused by the database (an euid registered meanwhile)"]
            await _finish(import_id, "failed", report(problems))
            return
        await GatewayLiteImport.filter(id=import_id).update(processed_rows=start + len(batch))
        await asyncio.sleep(0)
    await _finish(import_id, "completed", "")


async def _registered(rows: list[Row]) -> list[str]:
    """Rows whose euid is already a device's username."""
    problems = []
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        taken = set(await Device.filter(username__in=[r.euid for r in chunk]).values_list("username", flat=True))
        problems += [f"line {r.line}: euid {r.euid} is already registered" for r in chunk if r.euid in taken]
    return problems


async def _write(rec: GatewayLiteImport, batch: list[Row], metadata: dict[str, Any]) -> None:
    owner, partner = rec.created_by_id, rec.partner_id  # type: ignore[attr-defined]
    async with in_transaction():
        await Device.bulk_create(
            [
                Device(
                    name=f"Gateway Lite {r.euid}",
                    kind="gateway_lite",
                    username=r.euid,
                    owner_id=owner,
                    tenant_partner_id=partner,
                    metadata=metadata,
                )
                for r in batch
            ]
        )
        ids = dict(await Device.filter(username__in=[r.euid for r in batch]).values_list("username", "id"))
        await GatewayLite.bulk_create(
            [
                GatewayLite(
                    uuid=uuid.uuid4(),
                    device_id=ids[r.euid],
                    product_id=rec.product_id,
                    imported_id=rec.id,  # type: ignore[attr-defined]
                    importer_id=owner,
                    importer_partner_id=partner,
                    fw_code=r.fw_code,
                    nabto_device_id=r.nabto_device_id,
                    install_code_hash=r.install_code_hash,
                )
                for r in batch
            ]
        )


async def _undo(import_id: uuid.UUID) -> None:
    """Remove what an unfinished import wrote (its gateways' registry rows, which take theirs along)."""
    device_ids = await GatewayLite.filter(imported_id=import_id).values_list("device_id", flat=True)
    for start in range(0, len(device_ids), 1000):
        await Device.filter(id__in=device_ids[start : start + 1000]).delete()


async def _finish(import_id: uuid.UUID, status: str, message: str) -> None:
    await GatewayLiteImport.filter(id=import_id).update(
        status=status, error_message=message, modified=datetime.now(UTC)
    )
    log.info("import %s %s%s", import_id, status, f": {message[:200]}" if message else "")


async def recover_imports() -> None:
    """At start: an import a stopped server left unfinished wrote part of its rows; they go, and the
    import says so (all or nothing)."""
    for rec in await GatewayLiteImport.filter(status__in=["pending", "processing"]):
        await _undo(rec.id)
        await _finish(rec.id, "failed", "the server stopped during the import; nothing was imported: upload it again")


async def cancel_jobs(ctx: Context) -> None:
    for task in list(ctx.jobs):
        task.cancel()
    if ctx.jobs:
        await asyncio.gather(*ctx.jobs, return_exceptions=True)
