//! Pages of the job list written as JSON straight from the rows the database answers.

/// A job list item borrowed from a row; written as [`crate::wire::JobListItem`] serializes.
/// Text is the bytes the database holds, UTF-8 as the service wrote it.
pub(super) struct ItemRef<'a> {
    pub id: &'a [u8],
    pub name: &'a [u8],
    pub user_name: &'a [u8],
    pub description: Option<&'a [u8]>,
    pub job_type: &'a [u8],
    pub status: &'a [u8],
    pub abnormal_count: i64,
    pub create_at: i64,
    pub update_at: i64,
}

/// Appends `text` as a JSON string. Most stored text is printable ASCII without a quote or a
/// backslash, and is copied as it is after one look at each byte; anything else is written by
/// `serde_json` (text that is not UTF-8, which the service never writes, with U+FFFD).
fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    if text
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail, and a str always serializes.
    let _ = match std::str::from_utf8(text) {
        Ok(s) => serde_json::to_writer(&mut *out, s),
        Err(_) => serde_json::to_writer(&mut *out, &String::from_utf8_lossy(text)),
    };
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends the item as a JSON object, fields in `JobListItem`'s order.
pub(super) fn write_item(out: &mut Vec<u8>, item: &ItemRef<'_>) {
    out.extend_from_slice(b"{\"id\":");
    write_str(out, item.id);
    out.extend_from_slice(b",\"name\":");
    write_str(out, item.name);
    out.extend_from_slice(b",\"user_name\":");
    write_str(out, item.user_name);
    if let Some(description) = item.description {
        out.extend_from_slice(b",\"description\":");
        write_str(out, description);
    }
    out.extend_from_slice(b",\"type\":");
    write_str(out, item.job_type);
    out.extend_from_slice(b",\"status\":");
    write_str(out, item.status);
    out.extend_from_slice(b",\"abnormal_count\":");
    write_int(out, item.abnormal_count);
    out.extend_from_slice(b",\"create_at\":");
    write_int(out, item.create_at);
    out.extend_from_slice(b",\"update_at\":");
    write_int(out, item.update_at);
    out.push(b'}');
}

/// What reading a page gave: its JSON array, its length, and the total when the statement
/// read it too.
pub(super) struct PageRead {
    pub json: Vec<u8>,
    pub rows: u64,
    pub total: Option<u64>,
}

/// A JSON array of list items, written as the rows come.
pub(super) struct PageWriter {
    out: Vec<u8>,
    /// With the rows coming in the opposite order of the page's, each item until the end.
    held: Option<Vec<Vec<u8>>>,
    rows: u64,
}

impl PageWriter {
    /// A page whose rows come in its order, or (`reversed`) in the opposite one.
    pub(super) fn new(reversed: bool) -> Self {
        let mut out = Vec::with_capacity(16 * 1024);
        out.push(b'[');
        Self {
            out,
            held: reversed.then(Vec::new),
            rows: 0,
        }
    }

    /// Appends an item from its columns (PostgreSQL).
    pub(super) fn push(&mut self, item: &ItemRef<'_>) {
        self.push_with(|out| write_item(out, item));
    }

    /// Appends an item the database already wrote as a JSON object (SQLite's `list_item`).
    pub(super) fn push_json(&mut self, item: &[u8]) {
        self.push_with(|out| out.extend_from_slice(item));
    }

    fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.rows += 1;
        match &mut self.held {
            Some(held) => {
                let mut one = Vec::with_capacity(256);
                write(&mut one);
                held.push(one);
            }
            None => {
                if self.rows > 1 {
                    self.out.push(b',');
                }
                write(&mut self.out);
            }
        }
    }

    /// The page as read, with the total the statement read beside it, if any.
    pub(super) fn read(self, total: Option<u64>) -> PageRead {
        PageRead {
            rows: self.rows,
            json: self.finish(),
            total,
        }
    }

    /// The array's text: UTF-8, as only whole `str`s, ASCII and the database's UTF-8 text
    /// were written.
    pub(super) fn finish(mut self) -> Vec<u8> {
        if let Some(held) = self.held.take() {
            for (i, one) in held.iter().rev().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(one);
            }
        }
        self.out.push(b']');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::{ItemRef, PageWriter};
    use crate::wire::JobListItem;

    #[test]
    fn borrowed_items_serialize_as_list_items() {
        for description in [
            None,
            Some("plain"),
            Some("a \"quoted\" one"),
            Some("tab\tnew\nline \\ é \u{1} \u{7f} 🙂"),
        ] {
            let owned = JobListItem {
                id: "i".into(),
                name: "n".into(),
                user_name: "u".into(),
                description: description.map(str::to_string),
                job_type: "COMMON".into(),
                status: "FINISHED".into(),
                abnormal_count: 2,
                create_at: 3,
                update_at: -4,
            };
            let borrowed = ItemRef {
                id: b"i",
                name: b"n",
                user_name: b"u",
                description: description.map(str::as_bytes),
                job_type: b"COMMON",
                status: b"FINISHED",
                abnormal_count: 2,
                create_at: 3,
                update_at: -4,
            };
            let mut written = Vec::new();
            super::write_item(&mut written, &borrowed);
            let expected = serde_json::to_string(&owned).expect("json");
            assert_eq!(String::from_utf8(written).expect("utf-8"), expected);
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_written_as_valid_json() {
        let mut written = Vec::new();
        super::write_str(&mut written, b"ab\xffc\"");
        assert_eq!(
            String::from_utf8(written).expect("utf-8"),
            "\"ab\u{fffd}c\\\"\""
        );
    }

    #[test]
    fn reversed_pages_hold_the_rows_in_the_opposite_order() {
        let item = |id: &'static str| ItemRef {
            id: id.as_bytes(),
            name: b"n",
            user_name: b"u",
            description: None,
            job_type: b"T",
            status: b"S",
            abnormal_count: 0,
            create_at: 1,
            update_at: 2,
        };
        for reversed in [false, true] {
            let mut page = PageWriter::new(reversed);
            for id in ["a", "b", "c"] {
                page.push(&item(id));
            }
            let read = page.read(Some(7));
            assert_eq!((read.rows, read.total), (3, Some(7)));
            let items: Vec<JobListItem> =
                serde_json::from_slice(&read.json).expect("a JSON array of items");
            let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
            let expected = if reversed {
                ["c", "b", "a"]
            } else {
                ["a", "b", "c"]
            };
            assert_eq!(ids, expected);
        }
        assert_eq!(PageWriter::new(true).finish(), b"[]");
    }
}
