//! Pages of the job list written as JSON straight from the rows the database answers.

#[cfg(test)]
use serde::Serialize;

/// A job list item borrowed from a row; written as [`crate::wire::JobListItem`] serializes.
#[cfg_attr(test, derive(Serialize))]
pub(super) struct ItemRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub user_name: &'a str,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub description: Option<&'a str>,
    #[cfg_attr(test, serde(rename = "type"))]
    pub job_type: &'a str,
    pub status: &'a str,
    pub abnormal_count: i64,
    pub create_at: i64,
    pub update_at: i64,
}

/// Appends `s` as a JSON string. Most stored text needs no escape and is copied as it is.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail, and a str always serializes.
        let _ = serde_json::to_writer(&mut *out, s);
    }
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
    pub json: String,
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

    pub(super) fn push(&mut self, item: &ItemRef<'_>) {
        self.rows += 1;
        match &mut self.held {
            Some(held) => {
                let mut one = Vec::with_capacity(256);
                write_item(&mut one, item);
                held.push(one);
            }
            None => {
                if self.rows > 1 {
                    self.out.push(b',');
                }
                write_item(&mut self.out, item);
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

    /// The array's text.
    pub(super) fn finish(mut self) -> String {
        if let Some(held) = self.held.take() {
            for (i, one) in held.iter().rev().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(one);
            }
        }
        self.out.push(b']');
        // Only whole `str`s and ASCII were written.
        String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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
            Some("a \"quoted\" one"),
            Some("tab\tnew\nline \\ é \u{1}"),
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
                update_at: 4,
            };
            let borrowed = ItemRef {
                id: "i",
                name: "n",
                user_name: "u",
                description,
                job_type: "COMMON",
                status: "FINISHED",
                abnormal_count: 2,
                create_at: 3,
                update_at: 4,
            };
            let mut written = Vec::new();
            super::write_item(&mut written, &borrowed);
            let expected = serde_json::to_string(&owned).expect("json");
            assert_eq!(String::from_utf8(written).expect("utf-8"), expected);
            assert_eq!(serde_json::to_string(&borrowed).expect("json"), expected);
        }
    }

    #[test]
    fn reversed_pages_hold_the_rows_in_the_opposite_order() {
        let item = |id| ItemRef {
            id,
            name: "n",
            user_name: "u",
            description: None,
            job_type: "T",
            status: "S",
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
                serde_json::from_str(&read.json).expect("a JSON array of items");
            let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
            let expected = if reversed {
                ["c", "b", "a"]
            } else {
                ["a", "b", "c"]
            };
            assert_eq!(ids, expected);
        }
        assert_eq!(PageWriter::new(true).finish(), "[]");
    }
}
