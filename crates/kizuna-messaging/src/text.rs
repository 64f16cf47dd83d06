//! The plain-text part of an email, made from its HTML when the author gave none: mail clients that show
//! text, screen readers and spam filters all read it.

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let entity = &tail[1..e];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" | "#39" => '\'',
                "nbsp" => ' ',
                "yen" => '¥',
                "euro" => '€',
                "pound" => '£',
                "copy" => '©',
                _ => {
                    let code = entity
                        .strip_prefix("#x")
                        .map(|h| u32::from_str_radix(h, 16).ok())
                        .unwrap_or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))?;
                    char::from_u32(code)?
                }
            };
            Some((c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))?;
    let value = &tag[at + name.len() + 1..];
    let (quote, value) = match value.chars().next()? {
        q @ ('"' | '\'') => (Some(q), &value[1..]),
        _ => (None, value),
    };
    let end = match quote {
        Some(q) => value.find(q)?,
        None => value.find(|c: char| c.is_whitespace() || c == '>').unwrap_or(value.len()),
    };
    Some(decode_entities(&value[..end]))
}

/// HTML to readable text: paragraphs and line breaks kept, list items bulleted, links written as
/// `text (url)`, styles, scripts and hidden preheaders dropped, whitespace collapsed.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut skip_until: Option<&'static str> = None;
    let mut link: Option<String> = None;
    let mut link_text_start = 0;
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            if skip_until.is_none() {
                out.push_str(&rest.replace(['\n', '\r', '\t'], " "));
            }
            break;
        };
        if skip_until.is_none() {
            out.push_str(&rest[..open].replace(['\n', '\r', '\t'], " "));
        }
        let after = &rest[open..];
        if let Some(comment) = after.strip_prefix("<!--") {
            rest = comment.find("-->").map(|e| &comment[e + 3..]).unwrap_or("");
            continue;
        }
        let close = after.find('>').unwrap_or(after.len() - 1);
        let tag = &after[1..close];
        rest = &after[(close + 1).min(after.len())..];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let closing = tag.starts_with('/');
        if let Some(until) = skip_until {
            if closing && name == until {
                skip_until = None;
            }
            continue;
        }
        let hidden = tag.to_ascii_lowercase().replace(' ', "").contains("display:none");
        match (name.as_str(), closing) {
            ("style" | "script" | "head" | "title", false) => {
                skip_until = Some(match name.as_str() {
                    "style" => "style",
                    "script" => "script",
                    "head" => "head",
                    _ => "title",
                })
            }
            ("div" | "span", false) if hidden => skip_until = Some(if name == "div" { "div" } else { "span" }),
            ("br", _) => out.push('\n'),
            ("p" | "div" | "tr" | "table" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol", _) => {
                out.push_str("\n\n")
            }
            ("li", false) => out.push_str("\n- "),
            ("hr", _) => out.push_str("\n\n---\n\n"),
            ("td" | "th", true) => out.push(' '),
            ("img", false) => {
                if let Some(alt) = attribute(tag, "alt").filter(|a| !a.trim().is_empty()) {
                    out.push_str(alt.trim());
                }
            }
            ("a", false) => {
                link = attribute(tag, "href");
                link_text_start = out.len();
            }
            ("a", true) => {
                if let Some(href) = link.take().filter(|h| h.starts_with("http") || h.starts_with("mailto:")) {
                    let text = decode_entities(out[link_text_start..].trim());
                    let shown = href.trim_start_matches("mailto:");
                    if text.is_empty() {
                        out.push_str(&href);
                    } else if text != shown {
                        out.push_str(&format!(" ({href})"));
                    }
                }
            }
            _ => {}
        }
    }
    let decoded = decode_entities(&out);
    // Collapse runs of spaces within lines and of blank lines between paragraphs.
    let mut text = String::new();
    let mut blank_lines = 0;
    for line in decoded.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank_lines += 1;
            continue;
        }
        if !text.is_empty() {
            text.push_str(if blank_lines > 0 { "\n\n" } else { "\n" });
        }
        blank_lines = 0;
        text.push_str(&line);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::html_to_text;

    #[test]
    fn keeps_structure_links_and_drops_what_is_not_read() {
        let html = r#"<html><head><title>T</title><style>p{color:red}</style></head><body>
            <div style="display: none">hidden preheader</div>
            <h1>Hello&nbsp;Aiko</h1><p>Your cart   is waiting.<br>See   it <a href="https://shop.example/cart?a=1&amp;b=2">here</a>.</p>
            <ul><li>Tea &amp; cups</li><li>Matcha</li></ul><img src="x.png" alt="Logo"><!-- a comment -->
            <p><a href="https://shop.example">https://shop.example</a></p></body></html>"#;
        let text = html_to_text(html);
        assert_eq!(
            text,
            "Hello Aiko\n\nYour cart is waiting.\nSee it here (https://shop.example/cart?a=1&b=2).\n\n- Tea & cups\n- Matcha\n\nLogo\n\nhttps://shop.example"
        );
    }

    #[test]
    fn survives_broken_markup() {
        assert_eq!(html_to_text("a < b & c <"), "a");
        assert_eq!(html_to_text("plain &bogus; &#x41;&#66;"), "plain &bogus; AB");
        assert_eq!(html_to_text(""), "");
    }
}
