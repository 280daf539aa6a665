#!/usr/bin/env python3
"""po-bench's Python peer: the same two hot paths, written the way a Python service would write them.

    python_peer.py [--writer W] FILE ITERATIONS        # prints {"bytes":…,"ingest_median_us":…,"reconcile_median_us":…}
    python_peer.py [--writer W] --print envelope FILE  # the queue message ingest writes (byte-for-byte po-bench's)
    python_peer.py [--writer W] --print appzen FILE    # AppZen's body reconcile writes (byte-for-byte po-bench's)

- ingest: parse and validate the Komet body (amounts as `decimal.Decimal` through `json`'s `parse_float`),
  normalise it, SHA-256 the body, write the queue message (the envelope) as JSON;
- reconcile: read that message (`Decimal` again), reconcile the invoices against the PO (the rules of
  shared/po-sync/src/reconcile.rs), map it to AppZen's body (shared/po-sync/src/appzen/mapping.rs, default settings) and write it.

Amounts leave as exact JSON numbers, as po-sync writes them. The standard `json` encoder cannot write a
`Decimal` as a number. Two writers, W, share everything else (parsing, validation, reconciliation, the
mapping's refusals) and write the same bytes:
- `tuned` (the default): both documents written straight from the data in po-sync's member order (the fastest of
  the stdlib ways tried, see "JSON out" below), strings through `json`'s C string encoder;
- `straightforward`: both documents built as plain dicts and lists and written by `simplejson.dumps(...,
  use_decimal=True)` with its C speedups (refused without them), like po-bench's serde derives; see
  "JSON out, straightforward" below.

Komet's documented sample has trailing commas (`"type": "Fresh Cut", }`), which `json` refuses: ingest removes
a comma that is followed only by white space and `}` or `]`, with one regular expression, inside the timed
path (po-sync's own parser accepts them in the same pass). That regular expression does not know about strings;
po-sync's parser does.

Each figure is the median of ITERATIONS timed runs (time.perf_counter_ns) after the same warm-up as
po-bench (ITERATIONS / 10, at most 20 runs). CPython's garbage collector is left on, as in a service.
"""

import hashlib
import json
import re
import sys
import time
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from json.encoder import encode_basestring

import simplejson

ENVELOPE_TYPE = "komet.po_reconciliation"
ENVELOPE_SCHEMA_VERSION = 1
# hot_paths::received_at(): a fixed arrival time, so both sides write the same bytes.
RECEIVED_AT = "2024-05-06T14:30:00Z"
MAX_AMOUNT = Decimal(10) ** 12
CENT = Decimal("0.01")
ZERO = Decimal(0)
APPZEN_STATUS_ISSUED = "PO_ISSUED"
# MappingSettings::default()
CURRENCY = "USD"
ADDITIONAL_CHARGES_GL_CODE = "ADDITIONAL_CHARGES"
PURCHASE_ORDER_STATUS = "Issued"

TRAILING_COMMA = re.compile(r",(\s*[}\]])")
DATE_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


class Invalid(Exception):
    """The payload was refused: every problem found, each with its path (ingest answers 400)."""


class Unmappable(Exception):
    """The PO cannot be one AppZen PO (reconcile notifies a person)."""


# ------------------------------------------------------------------------------------------------ JSON out
# The two documents are written straight from the data, in po-sync's member order (what serde's derive does),
# with `json`'s C string encoder for every string and each amount's own digits. `json.dumps` cannot write a
# `Decimal` as a number; a generic recursive encoder over dicts that can took about three times as long to
# write the sample's AppZen body as appzen_json() takes to map and write it.

S = encode_basestring


def number(amount):
    """A `Decimal` as a JSON number with its own digits, never through float (`60.0` stays `60.0`)."""
    return format(amount, "f")


def members(obj, keys):
    """`,"key":value` for each of `keys` present in `obj` (strings and whole numbers)."""
    return "".join(f',"{k}":{S(obj[k]) if type(obj[k]) is str else obj[k]}' for k in keys if k in obj)


LOCATION_KEYS = ("id", "code", "name")
VENDOR_KEYS = ("id", "code", "name", "vendorAccountingCode", "type")


def envelope_json(po, received_at, body_sha256):
    out = [
        f'{{"type":"{ENVELOPE_TYPE}","schemaVersion":{ENVELOPE_SCHEMA_VERSION},"receivedAt":"{received_at}",'
        f'"bodySha256":"{body_sha256}","po":{{"id":{po["id"]},"poNumber":{S(po["poNumber"])}'
    ]
    append = out.append
    for key in ("shipDate", "arrivalDate"):
        if key in po:
            append(f',"{key}":"{po[key]}"')
    if "subTotal" in po:
        append(f',"subTotal":{number(po["subTotal"])}')
    append(f',"total":{number(po["total"])}')
    if "location" in po:
        append(f',"location":{{{members(po["location"], LOCATION_KEYS)[1:]}}}')
    append(',"vendorInvoices":[')
    for i, invoice in enumerate(po["vendorInvoices"]):
        append(
            f'{"," if i else ""}{{"invoiceNumber":{S(invoice["invoiceNumber"])},'
            f'"invoiceAmount":{number(invoice["invoiceAmount"])},'
            f'"totalAdditionalCharges":{number(invoice["totalAdditionalCharges"])}'
        )
        if "file" in invoice:
            append(f',"file":{S(invoice["file"])}')
        if "vendor" in invoice:
            append(f',"vendor":{{{members(invoice["vendor"], VENDOR_KEYS)[1:]}}}')
        append(',"purchaseOrderItems":[')
        append(
            ",".join(
                f'{{"categoryProcurementAccountingCode":{S(item["categoryProcurementAccountingCode"])},'
                f'"totalCost":{number(item["totalCost"])}}}'
                if "categoryProcurementAccountingCode" in item
                else f'{{"totalCost":{number(item["totalCost"])}}}'
                for item in invoice["purchaseOrderItems"]
            )
        )
        append("]}")
    append("]}}")
    return "".join(out)


# ------------------------------------------------------------------------------------------------ ingest


class Checker:
    """Komet's payload, validated and normalised the way shared/po-sync/src/komet.rs does, problems with their paths."""

    def __init__(self):
        self.problems = []

    def report(self, path, message):
        self.problems.append(f"{path}: {message}")

    def member(self, obj, names, path):
        found = None
        for name in names:
            if name in obj:
                value = obj[name]
                if found is not None and value is not None and found != value:
                    self.report(f"{path}{names[0]}", f"given twice (as {names[0]} and {name}) with different values")
                elif found is None:
                    found = value
        return found

    def required(self, obj, names, path, what):
        value = self.member(obj, names, path)
        if value is None:
            self.report(f"{path}{names[0]}", f"expected {what}, found null" if names[0] in obj else "is required")
        return value

    def text(self, value, path):
        if type(value) is str:
            return value
        self.report(path, f"expected a string, found {value!r}")
        return None

    def identifier(self, value, path):
        value = self.text(value, path)
        if value is not None and not value.strip():
            self.report(path, "must not be empty")
            return None
        return value

    def whole_number(self, value, path):
        if type(value) is int and 0 <= value < 2**64:
            return value
        self.report(path, f"expected a non-negative whole number, found {value!r}")
        return None

    def code(self, value, path):
        if type(value) is str:
            return value
        if type(value) is int:
            return str(value)
        self.report(path, f"expected a string or a whole number, found {value!r}")
        return None

    def amount(self, value, path):
        t = type(value)
        if t is int:
            value = Decimal(value)
        elif t is not Decimal:
            self.report(path, f"expected a number, found {value!r}")
            return None
        if not value.is_finite():
            self.report(path, f"expected a finite amount, found {value}")
            return None
        if value.is_zero():
            return value.copy_abs()  # -0 is 0
        if value.is_signed():
            self.report(path, f"must not be negative, found {value}")
            return None
        if value > MAX_AMOUNT:
            self.report(path, f"expected an amount up to {MAX_AMOUNT}, found {value}")
            return None
        return value

    def date(self, value, path):
        if type(value) is str and DATE_SHAPE.match(value):
            try:
                date.fromisoformat(value)
                return value
            except ValueError:
                pass
        self.report(path, f"expected a date (YYYY-MM-DD), found {value!r}")
        return None

    def link(self, value, path):
        value = self.text(value, path)
        if value is None:
            return None
        value = value.strip()
        lower = value[:8].lower()
        if lower.startswith("https://") or lower.startswith("http://"):
            return value
        if not value or any(c.isspace() for c in value):
            self.report(path, f"expected a URL, found {value!r}")
            return None
        scheme, colon, _ = value.partition(":")
        if colon and "/" not in scheme and "." not in scheme:
            self.report(path, f'expected an http or https URL, found scheme "{scheme}"')
            return None
        return "https://" + value

    def single_object(self, value, path):
        if type(value) is dict:
            return value
        if type(value) is list and len(value) == 1 and type(value[0]) is dict:
            return value[0]
        if type(value) is list and not value:
            return None
        self.report(path, f"expected an object, found {value!r}")
        return None

    def optional(self, obj, names, path, read):
        value = self.member(obj, names, path)
        return None if value is None else read(value, f"{path}{names[0]}")

    def purchase_order(self, doc):
        if type(doc) is not dict:
            self.report("body", "expected a JSON object")
            return None
        po_id = self.required(doc, ("id",), "", "a number")
        po_id = None if po_id is None else self.whole_number(po_id, "id")
        po_number = self.required(doc, ("poNumber",), "", "a string")
        po_number = None if po_number is None else self.identifier(po_number, "poNumber")
        total = self.required(doc, ("total",), "", "a number")
        total = None if total is None else self.amount(total, "total")
        po = {"id": po_id, "poNumber": po_number}
        ship_date = self.optional(doc, ("shipDate",), "", self.date)
        if ship_date is not None:
            po["shipDate"] = ship_date
        arrival_date = self.optional(doc, ("arrivalDate",), "", self.date)
        if arrival_date is not None:
            po["arrivalDate"] = arrival_date
        sub_total = self.optional(doc, ("subTotal", "subtotal"), "", self.amount)
        if sub_total is not None:
            po["subTotal"] = sub_total
        po["total"] = total
        location = self.optional(doc, ("location",), "", self.location)
        if location is not None:
            po["location"] = location
        invoices = self.required(doc, ("vendorInvoices",), "", "an array")
        if type(invoices) is list:
            po["vendorInvoices"] = [self.vendor_invoice(v, f"vendorInvoices[{i}]") for i, v in enumerate(invoices)]
        elif invoices is not None:
            self.report("vendorInvoices", f"expected an array, found {invoices!r}")
        return po

    def location(self, value, path):
        obj = self.single_object(value, path)
        if obj is None:
            return None
        location = {}
        for key, read in (("id", self.whole_number), ("code", self.code), ("name", self.text)):
            v = self.optional(obj, (key,), f"{path}.", read)
            if v is not None:
                location[key] = v
        return location

    def vendor(self, value, path):
        obj = self.single_object(value, path)
        if obj is None:
            return None
        vendor = {}
        for key, read in (
            ("id", self.whole_number),
            ("code", self.code),
            ("name", self.text),
            ("vendorAccountingCode", self.text),
            ("type", self.text),
        ):
            v = self.optional(obj, (key,), f"{path}.", read)
            if v is not None:
                vendor[key] = v
        return vendor

    def vendor_invoice(self, value, path):
        if type(value) is not dict:
            self.report(path, f"expected an object, found {value!r}")
            return None
        prefix = f"{path}."
        number = self.required(value, ("invoiceNumber",), prefix, "a string")
        number = None if number is None else self.identifier(number, prefix + "invoiceNumber")
        amount = self.required(value, ("invoiceAmount",), prefix, "a number")
        amount = None if amount is None else self.amount(amount, prefix + "invoiceAmount")
        charges = self.member(value, ("totalAdditionalCharges",), prefix)
        charges = ZERO if charges is None else self.amount(charges, prefix + "totalAdditionalCharges")
        invoice = {"invoiceNumber": number, "invoiceAmount": amount, "totalAdditionalCharges": charges}
        file = self.optional(value, ("file",), prefix, self.link)
        if file is not None:
            invoice["file"] = file
        vendor = self.optional(value, ("vendor",), prefix, self.vendor)
        if vendor is not None:
            invoice["vendor"] = vendor
        items = self.required(value, ("purchaseOrderItems",), prefix, "an array")
        if type(items) is list:
            invoice["purchaseOrderItems"] = [self.item(v, f"{prefix}purchaseOrderItems[{i}]") for i, v in enumerate(items)]
        elif items is not None:
            self.report(prefix + "purchaseOrderItems", f"expected an array, found {items!r}")
        return invoice

    def item(self, value, path):
        if type(value) is not dict:
            self.report(path, f"expected an object, found {value!r}")
            return None
        item = {}
        code = self.optional(value, ("categoryProcurementAccountingCode",), f"{path}.", self.text)
        if code is not None:
            item["categoryProcurementAccountingCode"] = code
        cost = self.required(value, ("totalCost",), f"{path}.", "a number")
        item["totalCost"] = None if cost is None else self.amount(cost, f"{path}.totalCost")
        return item


def parse_webhook(body):
    try:
        doc = json.loads(TRAILING_COMMA.sub(r"\1", body.decode("utf-8")), parse_float=Decimal)
    except (ValueError, InvalidOperation) as e:
        raise Invalid(f"body: {e}") from None
    checker = Checker()
    po = checker.purchase_order(doc)
    if checker.problems:
        raise Invalid("; ".join(checker.problems[:20]))
    return po


def ingest(body, received_at, write_envelope=envelope_json):
    return write_envelope(parse_webhook(body), received_at, hashlib.sha256(body).hexdigest())


# ------------------------------------------------------------------------------------------------ reconcile


def accepts(difference, tolerance):
    return abs(difference).quantize(CENT, rounding=ROUND_HALF_UP) <= tolerance


def reconcile(po, tolerance=ZERO):
    """The four rules of shared/po-sync/src/reconcile.rs; returns the discrepancies."""
    discrepancies = []

    def check(rule, invoice_number, expected, actual):
        difference = actual - expected
        if not accepts(difference, tolerance):
            found = {"rule": rule}
            if invoice_number is not None:
                found["invoice_number"] = invoice_number
            found.update(expected=expected, actual=actual, difference=difference)
            discrepancies.append(found)

    all_items = all_invoices = all_charges = ZERO
    for invoice in po["vendorInvoices"]:
        items = sum((item["totalCost"] for item in invoice["purchaseOrderItems"]), ZERO)
        charges = invoice["totalAdditionalCharges"]
        check("invoice_items", invoice["invoiceNumber"], invoice["invoiceAmount"], items + charges)
        all_items += items
        all_invoices += invoice["invoiceAmount"]
        all_charges += charges
    total = po["total"]
    check("invoices_total", None, total, all_invoices)
    sub_total = po.get("subTotal")
    if sub_total is not None:
        check("items_subtotal", None, sub_total, all_items)
        check("additional_charges", None, total - sub_total, all_charges)
    return discrepancies


def same_vendor(a, b):
    if a.get("id") is not None and b.get("id") is not None:
        return a["id"] == b["id"]
    return a.get("code") == b.get("code") and a.get("vendorAccountingCode") == b.get("vendorAccountingCode")


def vendor_label(vendor):
    name = vendor.get("name") or vendor.get("code") or "unnamed vendor"
    return f"{name} (id {vendor['id']})" if vendor.get("id") is not None else name


def parties(po):
    """Who the AppZen PO is between: (location, entity_id, vendor, supplier_id), or Unmappable. Shared by both writers."""
    location = po.get("location") or {}
    entity_id = location.get("code")
    if entity_id is None:
        raise Unmappable("location.code is missing; AppZen requires it")

    vendors = []
    for invoice in po["vendorInvoices"]:
        vendor = invoice.get("vendor")
        if vendor is not None and not any(same_vendor(known, vendor) for known in vendors):
            vendors.append(vendor)
    if not vendors:
        raise Unmappable("vendorInvoices[].vendor is missing; AppZen requires it")
    if len(vendors) > 1:
        raise Unmappable(f"the invoices name {len(vendors)} different vendors ({', '.join(map(vendor_label, vendors))})")
    vendor = vendors[0]
    supplier_id = next(
        (c for c in (vendor.get("vendorAccountingCode"), vendor.get("code")) if c is not None and c.strip()), None
    )
    if supplier_id is None:
        raise Unmappable("vendor.vendorAccountingCode and vendor.code is missing; AppZen requires it")
    return location, entity_id, vendor, supplier_id


def appzen_json(po):
    """Komet PO -> AppZen's upsert body, mapped as shared/po-sync/src/appzen/mapping.rs maps it with the default settings and
    written as it is mapped."""
    location, entity_id, vendor, supplier_id = parties(po)
    currency = S(CURRENCY)
    status = S(PURCHASE_ORDER_STATUS)
    out = [f'{{"purchase_order_number":{S(po["poNumber"])},"entity_id":{S(entity_id)},"supplier_id":{S(supplier_id)}']
    append = out.append
    if "shipDate" in po:
        append(f',"start_date":"{po["shipDate"]}"')
    if "arrivalDate" in po:
        append(f',"end_date":"{po["arrivalDate"]}"')
    if "shipDate" in po:
        append(f',"purchase_order_date":"{po["shipDate"]}"')
    append(
        f',"total_amount":{{"amount":{number(po["total"])},"currency":{currency}}},"purchase_order_status":{status},'
        f'"appzen_purchase_order_status":"{APPZEN_STATUS_ISSUED}"'
    )
    if "name" in location:
        append(f',"ship_to_location":{S(location["name"])}')
    ship_to_location_id = location.get("code", str(location["id"]) if "id" in location else None)
    if ship_to_location_id is not None:
        append(f',"ship_to_location_id":{S(ship_to_location_id)}')
    append(f',"custom_json":{{"komet_po_id":{po["id"]}')
    if "id" in location:
        append(f',"komet_location_id":{location["id"]}')
    if "id" in vendor:
        append(f',"komet_vendor_id":{vendor["id"]}')
    if "name" in vendor:
        append(f',"komet_vendor_name":{S(vendor["name"])}')
    if po.get("subTotal") is not None:
        append(f',"komet_sub_total":{number(po["subTotal"])}')
    append(',"komet_invoices":[')
    for i, invoice in enumerate(po["vendorInvoices"]):
        append(
            f'{"," if i else ""}{{"invoice_number":{S(invoice["invoiceNumber"])},'
            f'"invoice_amount":{number(invoice["invoiceAmount"])},'
            f'"total_additional_charges":{number(invoice["totalAdditionalCharges"])}'
        )
        if "file" in invoice:
            append(f',"file":{S(invoice["file"])}')
        append("}")
    append(']},"purchase_order_lines":[')

    zero = f'{{"amount":0,"currency":{currency}}}'
    # Everything of a line after its amounts but its custom_json, the same on every line.
    statuses = f'"purchase_order_line_status":{status},"appzen_purchase_order_line_status":"{APPZEN_STATUS_ISSUED}"'
    line_number = 0
    seen = set()
    for i, invoice in enumerate(po["vendorInvoices"]):
        invoice_number = invoice["invoiceNumber"]
        if invoice_number in seen:
            raise Unmappable(f"invoice number {invoice_number} appears more than once")
        seen.add(invoice_number)
        quoted = S(invoice_number)
        for j, item in enumerate(invoice["purchaseOrderItems"]):
            gl_code = item.get("categoryProcurementAccountingCode")
            if gl_code is None:
                raise Unmappable(f"vendorInvoices[{i}].purchaseOrderItems[{j}].categoryProcurementAccountingCode is missing")
            position = j + 1
            line_number += 1
            money = f'{{"amount":{number(item["totalCost"])},"currency":{currency}}}'
            append(
                f'{"," if line_number > 1 else ""}{{"po_line_id":{S(f"{invoice_number}-{position}")},'
                f'"line_number":{line_number},"gl_code":{S(gl_code)},'
                f'"line_description":{S(f"Invoice {invoice_number} item {position}")},"quantity":1,'
                f'"unit_price":{money},"amount":{money},"uninvoiced_amount":{zero},{statuses},'
                f'"custom_json":{{"komet_invoice_number":{quoted},"komet_item_position":{position}}}}}'
            )
        charges = invoice["totalAdditionalCharges"]
        if not charges.is_zero():
            line_number += 1
            money = f'{{"amount":{number(charges)},"currency":{currency}}}'
            append(
                f'{"," if line_number > 1 else ""}{{"po_line_id":{S(f"{invoice_number}-charges")},'
                f'"line_number":{line_number},"gl_code":{S(ADDITIONAL_CHARGES_GL_CODE)},'
                f'"line_description":{S(f"Invoice {invoice_number} additional charges")},"quantity":1,'
                f'"unit_price":{money},"amount":{money},"uninvoiced_amount":{zero},{statuses},'
                f'"custom_json":{{"komet_invoice_number":{quoted}}}}}'
            )
    if line_number == 0:
        raise Unmappable("the purchase order has no items")
    append("]}")
    return "".join(out)


def read_envelope(message):
    envelope = json.loads(message, parse_float=Decimal)
    if envelope.get("type") != ENVELOPE_TYPE or envelope.get("schemaVersion") != ENVELOPE_SCHEMA_VERSION:
        raise ValueError("not a po-sync webhook envelope of this version")
    return envelope


def as_decimals(po):
    """Whole-number amounts (`"total": 60`) come out of `json` as int; po-sync holds every amount as a decimal."""
    for key in ("total", "subTotal"):
        if type(po.get(key)) is int:
            po[key] = Decimal(po[key])
    for invoice in po["vendorInvoices"]:
        for key in ("invoiceAmount", "totalAdditionalCharges"):
            if type(invoice[key]) is int:
                invoice[key] = Decimal(invoice[key])
        for item in invoice["purchaseOrderItems"]:
            if type(item["totalCost"]) is int:
                item["totalCost"] = Decimal(item["totalCost"])
    return po


def reconcile_path(message, write_appzen=appzen_json):
    po = as_decimals(read_envelope(message)["po"])
    discrepancies = reconcile(po)
    return len(discrepancies), write_appzen(po)


# ------------------------------------------------------------------------------------------------ JSON out, straightforward
# The same two documents built as plain dicts and lists and handed to a generic encoder, as po-bench's serde derives
# do: the like-for-like peer. simplejson, because the standard `json` cannot write a `Decimal` as a number and
# simplejson can (`use_decimal=True`), through its C encoder. Parsing, validation, reconciliation and the mapping's
# refusals are the ones above; only the writing differs.

ONE = Decimal(1)


def plain(amount):
    """An amount as a `Decimal` that simplejson writes with po-sync's digits.

    simplejson writes `str(amount)`, which keeps `60.0`, `60` and `0.00` as they are but turns a parsed `1e2` into
    `1E+2` where po-sync writes `100`. (`str` also uses an exponent below 0.000001, e.g. `1E-7`, which no `Decimal`
    avoids; such amounts do not occur in purchase orders or in bench-peer's inputs.)
    """
    return amount.quantize(ONE) if amount.as_tuple().exponent > 0 else amount


def envelope(po, received_at, body_sha256):
    """The queue message ingest writes (po-sync's `WebhookEnvelope`)."""
    return {
        "type": ENVELOPE_TYPE,
        "schemaVersion": ENVELOPE_SCHEMA_VERSION,
        "receivedAt": received_at,
        "bodySha256": body_sha256,
        "po": envelope_po(po),
    }


def envelope_po(po):
    out = {"id": po["id"], "poNumber": po["poNumber"]}
    for key in ("shipDate", "arrivalDate"):
        if key in po:
            out[key] = po[key]
    if "subTotal" in po:
        out["subTotal"] = plain(po["subTotal"])
    out["total"] = plain(po["total"])
    if "location" in po:
        out["location"] = po["location"]  # strings and whole numbers only, already in po-sync's member order
    out["vendorInvoices"] = [envelope_invoice(invoice) for invoice in po["vendorInvoices"]]
    return out


def envelope_invoice(invoice):
    out = {
        "invoiceNumber": invoice["invoiceNumber"],
        "invoiceAmount": plain(invoice["invoiceAmount"]),
        "totalAdditionalCharges": plain(invoice["totalAdditionalCharges"]),
    }
    if "file" in invoice:
        out["file"] = invoice["file"]
    if "vendor" in invoice:
        out["vendor"] = invoice["vendor"]
    out["purchaseOrderItems"] = [envelope_item(item) for item in invoice["purchaseOrderItems"]]
    return out


def envelope_item(item):
    out = {}
    if "categoryProcurementAccountingCode" in item:
        out["categoryProcurementAccountingCode"] = item["categoryProcurementAccountingCode"]
    out["totalCost"] = plain(item["totalCost"])
    return out


def money(amount):
    return {"amount": plain(amount), "currency": CURRENCY}


def appzen_body(po):
    """Komet PO -> AppZen's upsert body, as shared/po-sync/src/appzen/mapping.rs maps it with the default settings."""
    location, entity_id, vendor, supplier_id = parties(po)
    body = {"purchase_order_number": po["poNumber"], "entity_id": entity_id, "supplier_id": supplier_id}
    if "shipDate" in po:
        body["start_date"] = po["shipDate"]
    if "arrivalDate" in po:
        body["end_date"] = po["arrivalDate"]
    if "shipDate" in po:
        body["purchase_order_date"] = po["shipDate"]
    body["total_amount"] = money(po["total"])
    body["purchase_order_status"] = PURCHASE_ORDER_STATUS
    body["appzen_purchase_order_status"] = APPZEN_STATUS_ISSUED
    if "name" in location:
        body["ship_to_location"] = location["name"]
    ship_to_location_id = location.get("code", str(location["id"]) if "id" in location else None)
    if ship_to_location_id is not None:
        body["ship_to_location_id"] = ship_to_location_id

    custom = {"komet_po_id": po["id"]}
    if "id" in location:
        custom["komet_location_id"] = location["id"]
    if "id" in vendor:
        custom["komet_vendor_id"] = vendor["id"]
    if "name" in vendor:
        custom["komet_vendor_name"] = vendor["name"]
    if po.get("subTotal") is not None:
        custom["komet_sub_total"] = plain(po["subTotal"])
    custom["komet_invoices"] = [komet_invoice(invoice) for invoice in po["vendorInvoices"]]
    body["custom_json"] = custom
    body["purchase_order_lines"] = purchase_order_lines(po)
    return body


def komet_invoice(invoice):
    out = {
        "invoice_number": invoice["invoiceNumber"],
        "invoice_amount": plain(invoice["invoiceAmount"]),
        "total_additional_charges": plain(invoice["totalAdditionalCharges"]),
    }
    if "file" in invoice:
        out["file"] = invoice["file"]
    return out


def purchase_order_lines(po):
    """One line per item and one per invoice's additional charges; refuses as appzen_json() does, in the same order."""
    lines = []
    seen = set()
    for i, invoice in enumerate(po["vendorInvoices"]):
        invoice_number = invoice["invoiceNumber"]
        if invoice_number in seen:
            raise Unmappable(f"invoice number {invoice_number} appears more than once")
        seen.add(invoice_number)
        for j, item in enumerate(invoice["purchaseOrderItems"]):
            gl_code = item.get("categoryProcurementAccountingCode")
            if gl_code is None:
                raise Unmappable(f"vendorInvoices[{i}].purchaseOrderItems[{j}].categoryProcurementAccountingCode is missing")
            position = j + 1
            lines.append(
                po_line(
                    f"{invoice_number}-{position}",
                    len(lines) + 1,
                    gl_code,
                    f"Invoice {invoice_number} item {position}",
                    item["totalCost"],
                    {"komet_invoice_number": invoice_number, "komet_item_position": position},
                )
            )
        charges = invoice["totalAdditionalCharges"]
        if not charges.is_zero():
            lines.append(
                po_line(
                    f"{invoice_number}-charges",
                    len(lines) + 1,
                    ADDITIONAL_CHARGES_GL_CODE,
                    f"Invoice {invoice_number} additional charges",
                    charges,
                    {"komet_invoice_number": invoice_number},
                )
            )
    if not lines:
        raise Unmappable("the purchase order has no items")
    return lines


def po_line(line_id, line_number, gl_code, description, amount, custom):
    return {
        "po_line_id": line_id,
        "line_number": line_number,
        "gl_code": gl_code,
        "line_description": description,
        "quantity": 1,
        "unit_price": money(amount),
        "amount": money(amount),
        "uninvoiced_amount": money(ZERO),
        "purchase_order_line_status": PURCHASE_ORDER_STATUS,
        "appzen_purchase_order_line_status": APPZEN_STATUS_ISSUED,
        "custom_json": custom,
    }


def dumps(obj):
    # simplejson's documented way to write `Decimal` as exact JSON numbers; compact, UTF-8 left as it is (as serde_json).
    return simplejson.dumps(obj, use_decimal=True, separators=(",", ":"), ensure_ascii=False)


def envelope_straightforward(po, received_at, body_sha256):
    return dumps(envelope(po, received_at, body_sha256))


def appzen_straightforward(po):
    return dumps(appzen_body(po))


# writer name -> (envelope writer, AppZen body writer)
WRITERS = {
    "tuned": (envelope_json, appzen_json),
    "straightforward": (envelope_straightforward, appzen_straightforward),
}


# ------------------------------------------------------------------------------------------------ timing


def median_ns(iterations, run):
    for _ in range(min((iterations + 9) // 10, 20)):
        run()
    times = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        start = clock()
        run()
        times.append(clock() - start)
    times.sort()
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) // 2


def micros(ns):
    """Nanoseconds as microseconds with one decimal, rounded like po-bench."""
    tenths = (ns + 50) // 100
    return f"{tenths // 10}.{tenths % 10}"


USAGE = "usage: python_peer.py [--writer tuned|straightforward] FILE ITERATIONS | ... --print envelope|appzen FILE"


def main(argv):
    writer = "tuned"
    if argv[:1] == ["--writer"]:
        if len(argv) < 2 or argv[1] not in WRITERS:
            print(USAGE, file=sys.stderr)
            return 2
        writer, argv = argv[1], argv[2:]
    if writer == "straightforward" and simplejson.encoder.c_make_encoder is None:
        # Timing simplejson's pure-Python fallback would make the straightforward peer look slower than it is.
        print("python_peer.py: simplejson's C speedups are not available", file=sys.stderr)
        return 1
    write_envelope, write_appzen = WRITERS[writer]
    if len(argv) == 3 and argv[0] == "--print" and argv[1] in ("envelope", "appzen"):
        with open(argv[2], "rb") as f:
            body = f.read()
        message = ingest(body, RECEIVED_AT, write_envelope)
        sys.stdout.write(message if argv[1] == "envelope" else reconcile_path(message, write_appzen)[1])
        return 0
    if len(argv) != 2 or not argv[1].isdigit() or int(argv[1]) < 1:
        print(USAGE, file=sys.stderr)
        return 2
    path, iterations = argv[0], int(argv[1])
    with open(path, "rb") as f:
        body = f.read()
    try:
        message = ingest(body, RECEIVED_AT, write_envelope)
        reconcile_path(message, write_appzen)
    except Invalid as e:
        print(f"ingest would refuse {path} (400): {e}", file=sys.stderr)
        return 1
    except Unmappable as e:
        print(f"reconcile cannot map {path} to one AppZen PO: {e}", file=sys.stderr)
        return 1
    ingest_ns = median_ns(iterations, lambda: ingest(body, RECEIVED_AT, write_envelope))
    reconcile_ns = median_ns(iterations, lambda: reconcile_path(message, write_appzen))
    print(
        f'{{"bytes":{len(body)},"ingest_median_us":{micros(ingest_ns)},"reconcile_median_us":{micros(reconcile_ns)}}}'
    )
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
