//! CSV import parsing: Shopify exports and Kizuna's generic format → Segment-format messages (stored by the
//! ingest pipeline exactly as if sent to `POST /v1/batch`) and catalog products. Pure: no database, no network.
//!
//! ```no_run
//! # fn main() -> Result<(), kizuna_import::LineError> {
//! let file = std::fs::File::open("orders_export.csv").expect("open");
//! for record in kizuna_import::parse(kizuna_import::ImportKind::Orders, file)? {
//!     match record {
//!         Ok(record) => { /* store record.items */ }
//!         Err(e) => eprintln!("{e}"), // "line 7: Lineitem price: 'abc' is not a number"
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! How Shopify exports are mapped:
//! - customers: one `identify` per line; `userId` = `shopify:<Customer ID>` (or, without one, the email / phone
//!   identifies through `anonymousId` = `import:email:<email>` and `context.traits.email`); Total Spent / Total
//!   Orders are ignored (orders are imported on their own); marketing consent goes to `traits.consent`.
//! - orders: consecutive lines with the same `Name` are one order → `Order Completed` (or `Order Cancelled`, at
//!   `Cancelled at`, for cancelled orders), plus `Order Refunded` one second later when `Refunded Amount` > 0.
//!   Shopify's `Subtotal` is already net of discounts, so it is both `subtotal` and `revenue`.
//! - products: consecutive lines with the same `Handle` are one product (first variant's price/SKU); draft and
//!   archived products are imported with `in_stock = false`.
//!
//! Every message carries a deterministic `messageId` (`import:order:<id>:completed`,
//! `import:customer:<identity>:<content hash>`, …), so importing the same file twice adds nothing.

mod customers;
mod fields;
mod lines;
mod message;
mod orders;
mod products;

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::str::FromStr;

use csv::ByteRecord;

use crate::fields::{Fields, Header, Row};
use crate::lines::LineTracker;
pub use crate::message::LIBRARY_NAME;

/// What a file contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImportKind {
    Customers,
    Orders,
    Products,
}

impl ImportKind {
    pub const ALL: [ImportKind; 3] = [ImportKind::Customers, ImportKind::Orders, ImportKind::Products];

    pub fn as_str(self) -> &'static str {
        match self {
            ImportKind::Customers => "customers",
            ImportKind::Orders => "orders",
            ImportKind::Products => "products",
        }
    }
}

impl fmt::Display for ImportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImportKind {
    type Err = String;

    /// `customers`, `orders` or `products` (case-insensitive; singular accepted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "customers" | "customer" => Ok(ImportKind::Customers),
            "orders" | "order" => Ok(ImportKind::Orders),
            "products" | "product" => Ok(ImportKind::Products),
            other => Err(format!("unknown import kind '{other}': expected customers, orders or products")),
        }
    }
}

/// The layout of a file, detected from its header row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Shopify admin's CSV export (customers, orders or products).
    Shopify,
    /// Kizuna's own columns, see [`generic_format_doc`].
    Generic,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Shopify => "Shopify export",
            Format::Generic => "generic format",
        })
    }
}

/// One thing to store.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // items are short-lived and mostly products or mostly messages; no boxing
pub enum ImportItem {
    /// A Segment message (`identify` or `track`), to be ingested as if it came through `POST /v1/batch`.
    Message(serde_json::Value),
    /// A validated catalog product, to be upserted by `id`.
    Product(kizuna_catalog::Product),
}

/// What one CSV line — or one order / product spanning several consecutive lines — turned into.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRecord {
    /// 1-based physical line (the header is line 1) where the record starts.
    pub line: u64,
    pub items: Vec<ImportItem>,
}

/// A line that could not be imported, and why (the reason names the column).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    pub line: u64,
    pub reason: String,
}

/// Settings that the file itself does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// ISO 4217 currency for products (Shopify product exports carry none) and for orders without a
    /// currency column. Default `USD`.
    pub currency: String,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { currency: "USD".to_owned() }
    }
}

/// The generic CSV format, as Markdown (for the README and `--help`).
pub fn generic_format_doc() -> &'static str {
    include_str!("generic_format.md")
}

/// Reads the header row and returns a streaming importer. Fails (at line 1) when the header matches neither
/// the Shopify export nor the generic format for `kind`; the reason lists the expected columns.
pub fn parse<R: Read>(kind: ImportKind, reader: R) -> Result<Importer<R>, LineError> {
    parse_with_options(kind, reader, ImportOptions::default())
}

/// [`parse`] with explicit [`ImportOptions`].
pub fn parse_with_options<R: Read>(
    kind: ImportKind,
    reader: R,
    options: ImportOptions,
) -> Result<Importer<R>, LineError> {
    let header_error = |reason: String| LineError { line: 1, reason };
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(LineTracker::new(reader));
    let raw = csv.byte_headers().map_err(|e| header_error(format!("cannot read the header row: {e}")))?.clone();
    let (record, problem) = decode(&raw, None);
    if let Some(problem) = problem {
        return Err(header_error(problem));
    }
    if record.iter().all(|f| f.trim().is_empty()) {
        return Err(header_error(format!("the file is empty: expected a header row. {}", expected(kind))));
    }
    let header = Header::new(&record).map_err(header_error)?;
    let format = detect(kind, &header).map_err(header_error)?;
    Ok(Importer {
        kind,
        format,
        csv,
        header,
        currency: options.currency.trim().to_uppercase(),
        peeked: None,
        done: false,
        seen: HashMap::new(),
    })
}

/// Streams [`ImportRecord`]s; a bad line (or order) yields `Err(LineError)` and parsing goes on after it.
pub struct Importer<R> {
    kind: ImportKind,
    format: Format,
    csv: csv::Reader<LineTracker<R>>,
    header: Header,
    currency: String,
    peeked: Option<Result<Row, LineError>>,
    done: bool,
    /// Group keys (order names, product handles) already emitted, with their first line.
    seen: HashMap<String, u64>,
}

impl<R: Read> Importer<R> {
    pub fn kind(&self) -> ImportKind {
        self.kind
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The column whose value groups consecutive lines into one record, with the noun for messages.
    fn group_key(&self) -> Option<(&'static str, &'static str)> {
        match (self.kind, self.format) {
            (ImportKind::Orders, Format::Shopify) => Some(("name", "order")),
            (ImportKind::Orders, Format::Generic) => Some(("order_id", "order")),
            (ImportKind::Products, Format::Shopify) => Some(("handle", "product")),
            _ => None,
        }
    }

    /// Next non-blank row. Undecodable text becomes a row error; an I/O error ends the stream.
    fn next_row(&mut self) -> Option<Result<Row, LineError>> {
        if let Some(p) = self.peeked.take() {
            return Some(p);
        }
        if self.done {
            return None;
        }
        let mut raw = ByteRecord::new();
        loop {
            match self.csv.read_byte_record(&mut raw) {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => {
                    let byte = raw.position().map_or_else(|| self.csv.position().byte(), csv::Position::byte);
                    let line = self.csv.get_mut().line_at(byte);
                    let (rec, problem) = decode(&raw, Some(&self.header));
                    let row = Row { line, rec, problem };
                    if row.problem.is_some() || !row.is_blank() {
                        return Some(Ok(row));
                    }
                }
                Err(e) => {
                    let byte = e.position().map_or_else(|| self.csv.position().byte(), csv::Position::byte);
                    let line = self.csv.get_mut().line_at(byte);
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        self.done = true;
                    }
                    return Some(Err(LineError { line, reason: format!("cannot read the CSV: {e}") }));
                }
            }
        }
    }

    /// A one-line record (customers, generic products).
    fn single(&self, row: &Row) -> Result<ImportRecord, LineError> {
        if let Some(reason) = &row.problem {
            return Err(LineError { line: row.line, reason: reason.clone() });
        }
        let f = Fields::new(&self.header, row);
        let item = match (self.kind, self.format) {
            (ImportKind::Customers, Format::Shopify) => customers::shopify(f).map(ImportItem::Message),
            (ImportKind::Customers, Format::Generic) => customers::generic(f).map(ImportItem::Message),
            _ => products::generic(f, &self.currency).map(ImportItem::Product),
        };
        item.map(|item| ImportRecord { line: row.line, items: vec![item] })
            .map_err(|reason| LineError { line: row.line, reason })
    }

    /// A multi-line record (orders, Shopify products); any failure fails the whole group at its first line.
    fn group(&self, rows: &[Row], key: &str, noun: &str) -> Result<ImportRecord, LineError> {
        let line = rows.first().map_or(0, |r| r.line);
        let problem = rows.iter().find_map(|r| r.problem.as_ref().map(|p| (r.line, p.clone())));
        let items = if let Some(problem) = problem {
            Err(problem)
        } else {
            match (self.kind, self.format) {
                (ImportKind::Orders, Format::Shopify) => orders::shopify(&self.header, rows, &self.currency)
                    .map(|msgs| msgs.into_iter().map(ImportItem::Message).collect()),
                (ImportKind::Orders, Format::Generic) => orders::generic(&self.header, rows, &self.currency)
                    .map(|msgs| msgs.into_iter().map(ImportItem::Message).collect()),
                _ => products::shopify(&self.header, rows, &self.currency).map(|p| vec![ImportItem::Product(p)]),
            }
        };
        items.map(|items| ImportRecord { line, items }).map_err(|(at, reason)| {
            let reason = if at == line { reason } else { format!("{reason} (on line {at}, part of {noun} {key})") };
            LineError { line, reason }
        })
    }
}

impl<R: Read> Iterator for Importer<R> {
    type Item = Result<ImportRecord, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = match self.next_row()? {
            Ok(row) => row,
            Err(e) => return Some(Err(e)),
        };
        let Some((key_col, noun)) = self.group_key() else {
            return Some(self.single(&first));
        };
        let key = Fields::new(&self.header, &first).get(key_col).to_owned();
        if key.is_empty() {
            let reason = format!("{}: missing", self.header.label(key_col));
            return Some(Err(LineError { line: first.line, reason }));
        }
        let mut rows = vec![first];
        loop {
            match self.next_row() {
                Some(Ok(row)) if Fields::new(&self.header, &row).get(key_col) == key => rows.push(row),
                other => {
                    self.peeked = other;
                    break;
                }
            }
        }
        let line = rows[0].line;
        if let Some(prev) = self.seen.get(&key) {
            let label = self.header.label(key_col);
            let reason =
                format!("{label} '{key}' already appeared on line {prev}: all lines of one {noun} must be consecutive");
            return Some(Err(LineError { line, reason }));
        }
        self.seen.insert(key.clone(), line);
        Some(self.group(&rows, &key, noun))
    }
}

/// Decodes a raw record as UTF-8. Invalid text is replaced (so grouping still works) and reported.
fn decode(raw: &ByteRecord, header: Option<&Header>) -> (csv::StringRecord, Option<String>) {
    let mut rec = csv::StringRecord::with_capacity(raw.as_slice().len(), raw.len());
    let mut problem = None;
    for (i, field) in raw.iter().enumerate() {
        match std::str::from_utf8(field) {
            Ok(s) => rec.push_field(s),
            Err(_) => {
                rec.push_field(&String::from_utf8_lossy(field));
                if problem.is_none() {
                    let column =
                        header.and_then(|h| h.name_at(i)).map_or_else(|| format!("column {}", i + 1), str::to_owned);
                    problem = Some(format!("{column}: text is not valid UTF-8 (save the file as UTF-8 CSV)"));
                }
            }
        }
    }
    (rec, problem)
}

/// Short description of the accepted headers for `kind`, used in header errors.
fn expected(kind: ImportKind) -> String {
    let (shopify, generic, note) = match kind {
        ImportKind::Customers => (
            "Customer ID, First Name, Last Name, Email, Accepts Email Marketing, Default Address …, Phone, \
             Accepts SMS Marketing, Tags",
            customers::GENERIC_COLUMNS.join(", "),
            " (at least one of user_id/email/phone)",
        ),
        ImportKind::Orders => (
            "Name, Email, Financial Status, Currency, Subtotal, Shipping, Taxes, Total, Discount Code, \
             Discount Amount, Created at, Lineitem quantity, Lineitem name, Lineitem price, Lineitem sku, \
             Refunded Amount, Vendor, …",
            orders::GENERIC_COLUMNS.join(", "),
            "",
        ),
        ImportKind::Products => (
            "Handle, Title, Body (HTML), Vendor, Product Category, Type, Tags, Variant SKU, Variant Inventory Qty, \
             Variant Price, Variant Compare At Price, Image Src, Status, …",
            products::GENERIC_COLUMNS.join(", "),
            "",
        ),
    };
    format!("Expected a Shopify {kind} export ({shopify}) or the generic {kind} columns {generic}{note}")
}

/// Shopify's spelling of a column name, for messages.
fn shopify_label(key: &str) -> String {
    match key {
        "email" => "Email",
        "name" => "Name",
        "created at" => "Created at",
        "lineitem quantity" => "Lineitem quantity",
        "lineitem price" => "Lineitem price",
        "handle" => "Handle",
        "title" => "Title",
        "variant price" => "Variant Price",
        other => other,
    }
    .to_owned()
}

/// Picks the format from the header, or explains what is missing.
fn detect(kind: ImportKind, header: &Header) -> Result<Format, String> {
    let any = |keys: &[&str]| keys.iter().any(|k| header.has(k));
    let missing = |keys: &[&str], label: fn(&str) -> String| -> Vec<String> {
        keys.iter().filter(|k| !header.has(k)).map(|k| label(k)).collect()
    };
    let found = || header.names().map(|(_, n)| n).collect::<Vec<_>>().join(", ");
    let require = |what: &str, format: Format, keys: &[&str], label: fn(&str) -> String| {
        let absent = missing(keys, label);
        if absent.is_empty() {
            Ok(format)
        } else {
            let all = keys.iter().map(|k| label(k)).collect::<Vec<_>>().join(", ");
            Err(format!(
                "this looks like a {what} but is missing column(s) {}; it needs at least {all}",
                absent.join(", ")
            ))
        }
    };
    let plain = |k: &str| k.to_owned();
    // A Shopify export of another kind (columns that only that export has): say so, rather than reading it as
    // `kind` (a Shopify orders export has Email and Accepts Marketing too) or listing "missing columns".
    let looks_like = |other: ImportKind| match other {
        ImportKind::Orders => any(&["lineitem name", "lineitem quantity"]),
        ImportKind::Products => header.has("handle") && any(&["variant price", "variant sku", "body (html)"]),
        ImportKind::Customers => any(&["total orders", "default address address1"]),
    };
    if let Some(other) = ImportKind::ALL.into_iter().find(|o| *o != kind && looks_like(*o)) {
        return Err(format!("this looks like a Shopify {other} export, not {kind}: import it as {other}"));
    }
    let unrecognised = || Err(format!("unrecognised {kind} header ({}). {}", found(), expected(kind)));
    match kind {
        ImportKind::Customers => {
            if any(&customers::SHOPIFY_MARKERS) {
                require("Shopify customers export", Format::Shopify, &["email"], shopify_label)
            } else if any(&["user_id", "email", "phone"]) {
                Ok(Format::Generic)
            } else {
                unrecognised()
            }
        }
        ImportKind::Orders => {
            if any(&orders::SHOPIFY_MARKERS) {
                require("Shopify orders export", Format::Shopify, &orders::SHOPIFY_REQUIRED, shopify_label)
            } else if header.has("order_id") {
                let format = require("generic orders file", Format::Generic, &orders::GENERIC_REQUIRED, plain)?;
                if any(&["user_id", "email"]) {
                    Ok(format)
                } else {
                    Err("this looks like a generic orders file but has neither a user_id nor an email column"
                        .to_owned())
                }
            } else {
                unrecognised()
            }
        }
        ImportKind::Products => {
            if any(&products::SHOPIFY_MARKERS) {
                require("Shopify products export", Format::Shopify, &products::SHOPIFY_REQUIRED, shopify_label)
            } else if header.has("id") {
                require("generic products file", Format::Generic, &products::GENERIC_REQUIRED, plain)
            } else {
                unrecognised()
            }
        }
    }
}

#[cfg(test)]
mod tests;
