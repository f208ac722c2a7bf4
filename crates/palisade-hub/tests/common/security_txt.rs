//! RFC 9116 parsing shared by the security.txt tests (plain and OpenPGP-signed).

/// Unix seconds of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SSZ` (RFC 9116 §2.5.5).
pub fn parse_expires(text: &str) -> i64 {
    let b = text.as_bytes();
    assert_eq!(b.len(), 20, "Expires {text:?} is RFC 3339 with Z");
    assert!(
        b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[19] == b'Z',
        "{text:?}"
    );
    let num = |r: std::ops::Range<usize>| -> i64 { text[r].parse().expect("digits") };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

/// RFC 9116 §4 grammar, as far as it matters here: comment lines, blank lines, and
/// `Field-Name: value` lines; anything else is a parse error.
pub fn fields(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once(": ").expect("field line");
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "field name {name:?}"
        );
        out.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    out
}

/// The signed text of an OpenPGP cleartext-signed message (RFC 9580 §7), dash-escaping
/// undone; panics if `text` is not one.
pub fn cleartext_body(text: &str) -> String {
    let rest = text
        .strip_prefix("-----BEGIN PGP SIGNED MESSAGE-----\n")
        .expect("cleartext signed message");
    let (_headers, rest) = rest.split_once("\n\n").expect("armor headers end");
    let (body, _sig) = rest
        .split_once("\n-----BEGIN PGP SIGNATURE-----\n")
        .expect("signature block");
    body.lines()
        .map(|l| {
            assert!(
                !l.starts_with('-') || l.starts_with("- "),
                "dash-escaped: {l:?}"
            );
            l.strip_prefix("- ").unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}
