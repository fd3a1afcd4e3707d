//! A page of the job list as the answer holds it: a JSON array of list items that the
//! database wrote.
//!
//! The shape of a list item is the Rust type [`crate::wire::JobListItem`]. Each database
//! keeps every job's item as the JSON object serde writes for that type (the `list_item`
//! column: SQLite migration 0008, PostgreSQL migration 0007, which hold the same shape as
//! SQL), so a page is those objects copied one after the other, with no column read or
//! encoded again here. [`check_items_are_the_bytes_serde_writes`] proves, on each backend,
//! that the migrations' objects are byte for byte what serde writes for the Rust type.

/// What reading a page gave: its JSON array, its length, and the total when the statement
/// read it too.
pub(crate) struct PageRead {
    pub json: Vec<u8>,
    pub rows: u64,
    pub total: Option<u64>,
}

/// A JSON array of list items, written as the rows come.
pub(crate) struct PageWriter {
    out: Vec<u8>,
    /// With the rows coming in the opposite order of the page's, where each item ends.
    held: Option<Vec<usize>>,
    rows: u64,
}

impl PageWriter {
    /// A page whose rows come in its order, or (`reversed`) in the opposite one.
    pub(crate) fn new(reversed: bool) -> Self {
        let mut out = Vec::with_capacity(16 * 1024);
        out.push(b'[');
        Self {
            out,
            held: reversed.then(Vec::new),
            rows: 0,
        }
    }

    /// Appends an item: a JSON object as the database wrote it (UTF-8).
    pub(crate) fn push(&mut self, item: &[u8]) {
        self.rows += 1;
        match &mut self.held {
            Some(ends) => {
                self.out.extend_from_slice(item);
                ends.push(self.out.len());
            }
            None => {
                if self.rows > 1 {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(item);
            }
        }
    }

    /// The page as read, with the total the statement read beside it, if any.
    pub(crate) fn read(self, total: Option<u64>) -> PageRead {
        PageRead {
            rows: self.rows,
            json: self.finish(),
            total,
        }
    }

    /// The array's text.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if let Some(ends) = self.held.take() {
            // The items were appended as they came; the array holds them the other way round.
            let mut out = Vec::with_capacity(self.out.len() + ends.len() + 1);
            out.push(b'[');
            let mut end = self.out.len();
            for (i, start) in ends.iter().rev().skip(1).chain([&1]).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&self.out[*start..end]);
                end = *start;
            }
            self.out = out;
        }
        self.out.push(b']');
        self.out
    }
}

/// Checks a store whose project holds no job yet and has the server `s1`: the items the
/// database writes (`list_item`) are byte for byte what serde_json writes for the same job,
/// whatever its text holds, on every path a page takes.
#[cfg(test)]
pub(crate) async fn check_items_are_the_bytes_serde_writes(
    store: &(impl crate::store::Backend + crate::store::JobStore),
    project: &crate::domain::ProjectId,
    nul: bool,
) {
    let mut descriptions = vec![
        None,
        Some(""),
        Some("plain"),
        Some("a \"quoted\" \\ one/"),
        Some("tab\tnew\nline\r \u{1} \u{8} \u{c} \u{1f} \u{7f}"),
        Some("é 🙂 \u{2028} \u{fffd} \u{10ffff}"),
    ];
    if nul {
        descriptions.push(Some("nul \u{0} in text"));
    }
    for (n, description) in descriptions.iter().enumerate() {
        let mut job = crate::store::testing::new_job(&format!("Job-é\"{n}\""), &["s1"]);
        job.description = description.map(str::to_string);
        job.now_ms = n as i64;
        store.create_job(project, job, None).await.expect("create");
    }
    for raw in [
        "",
        "limit=2&offset=1",
        "limit=2&offset=4",
        "sort_key=name&sort_dir=asc",
        "name=b-%C3%A9",
        "status=PROCESSING&type=COMMON&visible=true",
    ] {
        let page = store
            .list_jobs(project, &crate::store::testing::list_query(raw), 1000)
            .await
            .expect("list");
        let items = page.items().expect("a JSON array of items");
        assert!(!items.is_empty(), "{raw}");
        assert_eq!(
            String::from_utf8(page.data.clone()).expect("utf-8"),
            serde_json::to_string(&items).expect("json"),
            "{raw}"
        );
        for item in &items {
            let n: usize = item.create_at.try_into().expect("n");
            assert_eq!(item.name, format!("Job-é\"{n}\""));
            assert_eq!(item.description.as_deref(), descriptions[n], "{raw}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PageWriter;

    #[test]
    fn pages_hold_their_items_in_order_either_way_they_come() {
        let items: [&[u8]; 3] = [br#"{"id":"a"}"#, br#"{"id":"bb","n":[1,2]}"#, b"{}"];
        for (reversed, expected) in [
            (false, r#"[{"id":"a"},{"id":"bb","n":[1,2]},{}]"#),
            (true, r#"[{},{"id":"bb","n":[1,2]},{"id":"a"}]"#),
        ] {
            let mut page = PageWriter::new(reversed);
            for item in items {
                page.push(item);
            }
            let read = page.read(Some(7));
            assert_eq!((read.rows, read.total), (3, Some(7)));
            assert_eq!(String::from_utf8(read.json).expect("utf-8"), expected);
        }
        for reversed in [false, true] {
            let mut one = PageWriter::new(reversed);
            one.push(b"{}");
            assert_eq!(one.finish(), b"[{}]");
            assert_eq!(PageWriter::new(reversed).finish(), b"[]");
        }
    }
}
