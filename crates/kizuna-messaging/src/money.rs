//! Money as shoppers in each market expect to read it: the currency's own number of decimals (no "¥1,200.00"),
//! its symbol, and the locale's separators and symbol position.

/// Decimals a currency is shown with (ISO 4217 minor units for the currencies stores sell in).
pub fn minor_digits(currency: &str) -> usize {
    match currency {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "TWD" | "HUF" | "UGX" | "PYG" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
        _ => 2,
    }
}

fn symbol(currency: &str) -> Option<&'static str> {
    Some(match currency {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "JPY" => "¥",
        "KRW" => "₩",
        "CNY" => "CN¥",
        "TWD" => "NT$",
        "HKD" => "HK$",
        "SGD" => "S$",
        "AUD" => "A$",
        "CAD" => "CA$",
        "NZD" => "NZ$",
        "INR" => "₹",
        "THB" => "฿",
        "VND" => "₫",
        "PHP" => "₱",
        "BRL" => "R$",
        "MXN" => "MX$",
        _ => return None,
    })
}

struct Style {
    group: &'static str,
    decimal: &'static str,
    symbol_after: bool,
}

fn style(locale: &str) -> Style {
    let language = locale.split(['-', '_']).next().unwrap_or("en").to_ascii_lowercase();
    match language.as_str() {
        "de" | "es" | "it" | "nl" | "pt" | "id" | "tr" | "da" | "el" => {
            Style { group: ".", decimal: ",", symbol_after: true }
        }
        "fr" | "sv" | "nb" | "fi" | "pl" | "cs" | "ru" | "uk" => {
            Style { group: "\u{202f}", decimal: ",", symbol_after: true }
        }
        _ => Style { group: ",", decimal: ".", symbol_after: false },
    }
}

fn group_digits(digits: &str, separator: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * separator.len());
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(separator);
        }
        out.push(c);
    }
    out
}

/// `format_money(1234.5, "USD", "en-US")` → `$1,234.50`; `(1200, "JPY", "ja-JP")` → `¥1,200`;
/// `(1234.5, "EUR", "de-DE")` → `1.234,50 €`. An unknown currency code is written after the number.
pub fn format_money(amount: f64, currency: &str, locale: &str) -> String {
    let currency = currency.trim().to_ascii_uppercase();
    let digits = minor_digits(&currency);
    let amount = if amount.is_finite() { amount } else { 0.0 };
    let fixed = format!("{:.*}", digits, amount.abs());
    let (whole, fraction) = fixed.split_once('.').unwrap_or((fixed.as_str(), ""));
    let style = style(locale);
    let mut number = group_digits(whole, style.group);
    if !fraction.is_empty() {
        number.push_str(style.decimal);
        number.push_str(fraction);
    }
    let negative = amount < 0.0 && fixed.chars().any(|c| c.is_ascii_digit() && c != '0');
    let sign = if negative { "-" } else { "" };
    match symbol(&currency) {
        Some(symbol) if style.symbol_after => format!("{sign}{number}\u{a0}{symbol}"),
        Some(symbol) => format!("{sign}{symbol}{number}"),
        None => format!("{sign}{number}\u{a0}{currency}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_market_reads_its_own_format() {
        assert_eq!(format_money(1234.5, "USD", "en-US"), "$1,234.50");
        assert_eq!(format_money(1200.0, "JPY", "ja-JP"), "¥1,200");
        assert_eq!(format_money(1199.6, "JPY", "ja"), "¥1,200");
        assert_eq!(format_money(1234.5, "EUR", "de-DE"), "1.234,50\u{a0}€");
        assert_eq!(format_money(1234.5, "EUR", "fr-FR"), "1\u{202f}234,50\u{a0}€");
        assert_eq!(format_money(-5.0, "gbp", "en-GB"), "-£5.00");
        assert_eq!(format_money(12.0, "XYZ", "en"), "12.00\u{a0}XYZ");
        assert_eq!(format_money(1_000_000.0, "KRW", "ko"), "₩1,000,000");
        assert_eq!(format_money(f64::NAN, "USD", "en"), "$0.00");
        assert_eq!(format_money(-0.001, "USD", "en"), "$0.00");
    }
}
