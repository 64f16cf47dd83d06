//! Product lines → `kizuna_catalog::Product`, validated.

use kizuna_catalog::{Product, ProductError};

use crate::fields::{Fields, Header, Row, parse_bool, parse_money, split_list};
use crate::orders::OrderError;

/// Header names that mark a Shopify products export.
pub(crate) const SHOPIFY_MARKERS: [&str; 4] = ["handle", "body (html)", "variant price", "variant sku"];
pub(crate) const SHOPIFY_REQUIRED: [&str; 3] = ["handle", "title", "variant price"];
/// Columns of the generic products format.
pub(crate) const GENERIC_COLUMNS: [&str; 13] = [
    "id",
    "sku",
    "title",
    "url",
    "image",
    "price",
    "currency",
    "compare_at_price",
    "categories",
    "brand",
    "tags",
    "in_stock",
    "created_at",
];
pub(crate) const GENERIC_REQUIRED: [&str; 3] = ["id", "title", "price"];

/// Turns a catalog validation failure into a reason that names the file's column.
fn checked(
    product: Product,
    header: &Header,
    column_of: impl Fn(&'static str) -> &'static str,
) -> Result<Product, String> {
    match product.validate() {
        Ok(()) => Ok(product),
        Err(ProductError { field, message }) => {
            let column = column_of(field);
            let label = if column.is_empty() { field } else { header.label(column) };
            Err(format!("{label}: {message}"))
        }
    }
}

/// First non-empty value of `key` over the product's lines (Shopify leaves it blank on variant/image lines).
fn first<'a>(header: &'a Header, rows: &'a [Row], key: &str) -> Option<&'a str> {
    rows.iter().find_map(|r| Fields::new(header, r).opt(key))
}

/// One product of a Shopify products export: all consecutive lines with the same `Handle`
/// (the first carries the product, later ones extra variants and images).
pub(crate) fn shopify(header: &Header, rows: &[Row], currency: &str) -> Result<Product, OrderError> {
    let line0 = rows.first().map_or(0, |r| r.line);
    let handle = first(header, rows, "handle").unwrap_or_default().to_owned();

    // Variant lines carry a price or SKU; image-only lines carry neither.
    let mut first_variant: Option<(f64, Option<&str>, Option<f64>)> = None;
    let mut any_available = false;
    let has_qty = header.has("variant inventory qty");
    for row in rows {
        let f = Fields::new(header, row);
        if f.opt("variant price").is_none() && f.opt("variant sku").is_none() {
            continue;
        }
        let at = |e: String| (row.line, e);
        let price = f
            .money("variant price")
            .map_err(at)?
            .ok_or_else(|| at(format!("{}: missing for SKU '{}'", f.label("variant price"), f.get("variant sku"))))?;
        let compare_at = f.money("variant compare at price").map_err(at)?;
        if first_variant.is_none() {
            first_variant = Some((price, f.opt("variant sku"), compare_at));
        }
        let qty = match f.opt("variant inventory qty") {
            None => None,
            Some(q) => Some(
                q.parse::<i64>()
                    .map_err(|_| at(format!("{}: '{q}' is not a whole number", f.label("variant inventory qty"))))?,
            ),
        };
        let sells_when_out = f.get("variant inventory policy").eq_ignore_ascii_case("continue");
        any_available |= qty.is_none_or(|q| q > 0) || sells_when_out;
    }
    let Some((price, sku, compare_at_price)) = first_variant else {
        return Err((line0, format!("{}: missing (no variant line for '{handle}')", header.label("variant price"))));
    };

    let status = first(header, rows, "status").unwrap_or("active").to_ascii_lowercase();
    let sellable = !matches!(status.as_str(), "draft" | "archived");
    let mut categories: Vec<String> = split_list(first(header, rows, "product category").unwrap_or(""), ">");
    if let Some(t) = first(header, rows, "type")
        && !categories.iter().any(|c| c == t)
    {
        categories.push(t.to_owned());
    }
    let product = Product {
        id: handle.clone(),
        sku: sku.map(str::to_owned),
        title: first(header, rows, "title").unwrap_or_default().to_owned(),
        url: Some(format!("/products/{handle}")),
        image: first(header, rows, "image src").or_else(|| first(header, rows, "variant image")).map(str::to_owned),
        price,
        currency: currency.to_owned(),
        compare_at_price,
        categories,
        brand: first(header, rows, "vendor").map(str::to_owned),
        tags: split_list(first(header, rows, "tags").unwrap_or(""), ","),
        in_stock: sellable && (!has_qty || any_available),
        created_at: None,
    };
    checked(product, header, |field| match field {
        "id" => "handle",
        "title" => "title",
        "price" => "variant price",
        "compare_at_price" => "variant compare at price",
        _ => "",
    })
    .map_err(|e| (line0, e))
}

/// One line of the generic products format.
pub(crate) fn generic(f: Fields<'_>, default_currency: &str) -> Result<Product, String> {
    let price = f.money("price")?.ok_or_else(|| format!("{}: missing", f.label("price")))?;
    let in_stock = parse_bool(f.label("in_stock"), f.get("in_stock"))?.unwrap_or(true);
    let product = Product {
        id: f.get("id").to_owned(),
        sku: f.opt("sku").map(str::to_owned),
        title: f.get("title").to_owned(),
        url: f.opt("url").map(str::to_owned),
        image: f.opt("image").map(str::to_owned),
        price,
        currency: f.opt("currency").map_or_else(|| default_currency.to_owned(), str::to_uppercase),
        compare_at_price: parse_money(f.label("compare_at_price"), f.get("compare_at_price"))?,
        categories: split_list(f.get("categories"), "|"),
        brand: f.opt("brand").map(str::to_owned),
        tags: split_list(f.get("tags"), "|"),
        in_stock,
        created_at: f.timestamp("created_at")?,
    };
    checked(product, f.header, |field| match field {
        "id" => "id",
        "title" => "title",
        "price" => "price",
        "compare_at_price" => "compare_at_price",
        "currency" => "currency",
        _ => "",
    })
}
