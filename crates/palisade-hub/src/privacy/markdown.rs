//! A small, safe Markdown subset for the privacy policy: headings, paragraphs, bullet
//! and numbered lists, `**strong**`, `*emphasis*`, `` `code` ``, and links to `https:`
//! or `mailto:` only. Every character of the source is HTML-escaped before any markup
//! is added, and raw HTML is never passed through: it shows as text.

/// Escape text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A heading line: its level (1–6) and text.
pub fn heading(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    let level = trimmed.bytes().take_while(|b| *b == b'#').count();
    if (1..=6).contains(&level) {
        let rest = &trimmed[level..];
        if rest.is_empty() || rest.starts_with(' ') {
            return Some((level, rest.trim().trim_end_matches('#').trim()));
        }
    }
    None
}

fn bullet(line: &str) -> Option<&str> {
    let t = line.trim_start();
    t.strip_prefix("- ").or_else(|| t.strip_prefix("* "))
}

fn numbered(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    t[digits..].strip_prefix(". ")
}

/// Inline markup on already-split raw text; escapes everything it emits.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("**")
            && let Some(end) = after.find("**")
            && end > 0
        {
            out.push_str("<strong>");
            out.push_str(&inline(&after[..end]));
            out.push_str("</strong>");
            rest = &after[end + 2..];
            continue;
        }
        if let Some(after) = rest.strip_prefix('`')
            && let Some(end) = after.find('`')
        {
            out.push_str("<code>");
            out.push_str(&escape(&after[..end]));
            out.push_str("</code>");
            rest = &after[end + 1..];
            continue;
        }
        if let Some(after) = rest.strip_prefix('*')
            && let Some(end) = after.find('*')
            && end > 0
            && !after.starts_with(' ')
        {
            out.push_str("<em>");
            out.push_str(&inline(&after[..end]));
            out.push_str("</em>");
            rest = &after[end + 1..];
            continue;
        }
        if let Some(after) = rest.strip_prefix('[')
            && let Some(close) = after.find("](")
            && let Some(end) = after[close + 2..].find(')')
        {
            let label = &after[..close];
            let url = after[close + 2..close + 2 + end].trim();
            // Only links that cannot run script or leave TLS.
            if url.starts_with("https://") || url.starts_with("mailto:") {
                out.push_str(&format!(
                    "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
                    escape(url),
                    inline(label)
                ));
                rest = &after[close + 2 + end + 1..];
                continue;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push_str(&escape(&c.to_string()));
        }
        rest = chars.as_str();
    }
    out
}

/// Render the subset to HTML.
pub fn to_html(source: &str) -> String {
    #[derive(PartialEq)]
    enum Block {
        None,
        Para,
        Bullets,
        Numbers,
    }
    let mut out = String::new();
    let mut block = Block::None;
    let mut para: Vec<&str> = Vec::new();
    let close = |block: &mut Block, para: &mut Vec<&str>, out: &mut String| {
        match block {
            Block::Para => {
                out.push_str("<p>");
                out.push_str(&inline(&para.join(" ")));
                out.push_str("</p>\n");
                para.clear();
            }
            Block::Bullets => out.push_str("</ul>\n"),
            Block::Numbers => out.push_str("</ol>\n"),
            Block::None => {}
        }
        *block = Block::None;
    };
    for line in source.lines() {
        if line.trim().is_empty() {
            close(&mut block, &mut para, &mut out);
        } else if let Some((level, text)) = heading(line) {
            close(&mut block, &mut para, &mut out);
            // Policy headings start at h2: the page title is the h1.
            let level = (level + 1).min(6);
            out.push_str(&format!("<h{level}>{}</h{level}>\n", inline(text)));
        } else if let Some(item) = bullet(line) {
            if block != Block::Bullets {
                close(&mut block, &mut para, &mut out);
                out.push_str("<ul>\n");
                block = Block::Bullets;
            }
            out.push_str(&format!("<li>{}</li>\n", inline(item.trim())));
        } else if let Some(item) = numbered(line) {
            if block != Block::Numbers {
                close(&mut block, &mut para, &mut out);
                out.push_str("<ol>\n");
                block = Block::Numbers;
            }
            out.push_str(&format!("<li>{}</li>\n", inline(item.trim())));
        } else {
            if block != Block::Para {
                close(&mut block, &mut para, &mut out);
                block = Block::Para;
            }
            para.push(line.trim());
        }
    }
    close(&mut block, &mut para, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priv1_markup_subset() {
        let html = to_html(
            "# What data\n\nWe **collect** *little*.\n\n- one\n- `two`\n\n1. a\n2. b\n\n[us](mailto:privacy@example.com)",
        );
        assert!(html.contains("<h2>What data</h2>"));
        assert!(html.contains("<strong>collect</strong>"));
        assert!(html.contains("<em>little</em>"));
        assert!(html.contains("<ul>\n<li>one</li>\n<li><code>two</code></li>\n</ul>"));
        assert!(html.contains("<ol>"));
        assert!(html.contains("<a href=\"mailto:privacy@example.com\""));
    }

    #[test]
    fn priv1_html_and_script_links_are_inert() {
        let html = to_html(
            "<script>alert(1)</script>\n\n[x](javascript:alert(1)) <img src=x onerror=y> \"q\"",
        );
        assert!(!html.contains("<script"));
        assert!(!html.contains("<img"));
        assert!(!html.contains("href=\"javascript"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&quot;q&quot;"));
        let attr = to_html("[x](https://a.example/\"onmouseover=\"y)");
        assert!(!attr.contains("\"onmouseover"));
    }
}
