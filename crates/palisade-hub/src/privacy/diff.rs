//! A line diff between two policy versions (longest common subsequence), shown as
//! kept, removed and added lines. Policies are bounded in size before they are
//! stored, so the quadratic table stays small.

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Same(String),
    Removed(String),
    Added(String),
}

impl Line {
    /// `' '`, `'-'` or `'+'`.
    pub fn mark(&self) -> char {
        match self {
            Line::Same(_) => ' ',
            Line::Removed(_) => '-',
            Line::Added(_) => '+',
        }
    }
    pub fn text(&self) -> &str {
        match self {
            Line::Same(t) | Line::Removed(t) | Line::Added(t) => t,
        }
    }
    /// The CSS class of the line.
    pub fn class(&self) -> &'static str {
        match self {
            Line::Same(_) => "same",
            Line::Removed(_) => "removed",
            Line::Added(_) => "added",
        }
    }
}

/// The diff from `old` to `new`, line by line.
pub fn lines(old: &str, new: &str) -> Vec<Line> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (n, m) = (a.len(), b.len());
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n.max(m));
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(Line::Same(a[i].to_owned()));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(Line::Removed(a[i].to_owned()));
            i += 1;
        } else {
            out.push(Line::Added(b[j].to_owned()));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed((*l).to_owned())));
    out.extend(b[j..].iter().map(|l| Line::Added((*l).to_owned())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priv1_diff_marks_changes() {
        let d = lines("a\nb\nc", "a\nx\nc\nd");
        let marks: String = d.iter().map(Line::mark).collect();
        assert_eq!(marks, " -+ +");
        assert_eq!(d[2].text(), "x");
    }
}
