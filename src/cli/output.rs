//! How the CLI prints: aligned tables and key/value blocks for people, JSON for scripts,
//! and the one-line error report on stderr.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};

use crate::client::ClientError;

/// The two output forms every client and admin command offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Aligned, readable tables.
    #[default]
    Table,
    /// JSON (for client commands, the API's answer as it came, indented).
    Json,
}

/// `--output table|json`, accepted after any subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Output form: a readable table, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Rows under a header, columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<const N: usize>(headers: [&str; N]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are cleaned of control characters.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.rows
            .push(cells.into_iter().map(|c| clean(c.as_ref())).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, ending with a newline.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate().take(columns) {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < columns {
                    text.extend(std::iter::repeat_n(' ', widths[i] - width(cell)));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Label/value lines, labels padded to the longest one.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let label_width = pairs.iter().map(|(l, _)| width(l)).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in pairs {
        let _ = writeln!(out, "{label:<label_width$}  {}", clean(value));
    }
    out
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// One line of printable text: control characters (newlines, escapes) become spaces.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// An epoch-milliseconds time as `2025-03-15T08:30:00Z`.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A task time (epoch milliseconds as a decimal string) like [`time`]; other text as is.
pub fn time_text(ms: &str) -> String {
    ms.parse::<i64>()
        .map(time)
        .unwrap_or_else(|_| ms.to_string())
}

/// `-` for an absent or empty value.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

/// Indents a JSON document without reordering or re-encoding anything in it: keys keep the
/// server's order and strings their escapes. Text that is not JSON comes back unchanged.
pub fn pretty_json(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes `text` to stdout. A reader that went away (`| head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    write_out(text).map(drop)
}

/// Writes `text` to stdout; false when its reader went away (`| head`): a command that goes
/// on printing (a watch, a follow) is then done.
pub fn write_out(text: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write the output")),
    }
}

/// A value as indented JSON.
pub fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

/// The line printed after `error: ` for a failed command.
pub fn describe(error: &anyhow::Error) -> String {
    if let Some(ClientError::Transport(e)) = error.downcast_ref::<ClientError>() {
        let cause = crate::client::root_cause(e);
        let url = e
            .url()
            .map(|u| format!("{}://{}", u.scheme(), u.authority()))
            .unwrap_or_else(|| "the service".to_string());
        if e.is_timeout() {
            return format!("cannot reach {url}: no answer in time");
        }
        if e.is_builder() {
            // A value no request may carry (a token or key with a line break, say): the
            // caller's to mend, not the service's to answer.
            return format!("cannot make the request: {cause} (a flag's value or the profile's)");
        }
        return format!("cannot reach {url}: {cause}");
    }
    super::error_text(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let mut t = Table::new(["ID", "NAME"]);
        t.row(["a", "first"]);
        t.row(["long-id", "x\ny"]);
        assert_eq!(t.render(), "ID       NAME\na        first\nlong-id  x y\n");
    }

    #[test]
    fn pretty_json_keeps_order_and_escapes() {
        let raw = br#"{"b":1,"a":["x\"y","\u00fc"],"e":{},"f":[]}"#;
        assert_eq!(
            pretty_json(raw),
            "{\n  \"b\": 1,\n  \"a\": [\n    \"x\\\"y\",\n    \"\\u00fc\"\n  ],\n  \"e\": {},\n  \"f\": []\n}"
        );
        assert_eq!(pretty_json(b"not json"), "not json");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(1_742_027_400_000), "2025-03-15T08:30:00Z");
        assert_eq!(time_text("1742027400000"), "2025-03-15T08:30:00Z");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
