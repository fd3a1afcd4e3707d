//! The job list's filters and paging, validated from the raw query.

use super::ids::{holds_nul, lookup, simple_name};
use super::{Invalid, JobStatus};

/// Filters of the job list; each applies only when set, and they combine with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Exact job id.
    pub id: Option<String>,
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    /// Exact type.
    pub job_type: Option<String>,
    pub status: Option<JobStatus>,
    pub visible: Option<bool>,
}

impl JobFilter {
    /// True when `item` (of a job with this `visible`) passes every filter set, as the list
    /// would have it.
    pub fn matches(&self, item: &crate::wire::JobListItem, visible: bool) -> bool {
        self.id.as_ref().is_none_or(|id| *id == item.id)
            && self.name.as_ref().is_none_or(|name| {
                item.name
                    .to_ascii_lowercase()
                    .contains(&name.to_ascii_lowercase())
            })
            && self.job_type.as_ref().is_none_or(|t| *t == item.job_type)
            && self.status.is_none_or(|s| s.as_str() == item.status)
            && self.visible.is_none_or(|v| v == visible)
    }

    /// True when no job can match: an `id` or `name` holding U+0000, which no stored text
    /// holds.
    pub fn matches_nothing(&self) -> bool {
        [&self.id, &self.name]
            .into_iter()
            .any(|v| v.as_deref().is_some_and(holds_nul))
    }
}

/// Column the list is ordered by; ties are broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    CreateAt,
    UpdateAt,
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDir {
    Asc,
    Desc,
}

impl SortDir {
    pub fn reverse(self) -> Self {
        match self {
            Self::Asc => Self::Desc,
            Self::Desc => Self::Asc,
        }
    }
}

/// Which page of the list to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// `None`: the whole list up to the maximum page size, as the SDK expects.
    pub limit: Option<u64>,
    pub offset: u64,
    pub sort_key: SortKey,
    pub sort_dir: SortDir,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: None,
            offset: 0,
            sort_key: SortKey::CreateAt,
            sort_dir: SortDir::Desc,
        }
    }
}

impl PageRequest {
    /// Rows to fetch: the limit, or the maximum page size.
    pub fn effective_limit(&self, max_page_size: u64) -> u64 {
        self.limit.unwrap_or(max_page_size)
    }

    /// The page wrapper's numbers for `total` matching rows. A page past the end of a list
    /// that holds jobs is numbered as its last page (`current <= pages`), its data empty.
    pub fn numbers(&self, total: u64, max_page_size: u64) -> PageNumbers {
        let mut numbers = self.unclamped_numbers(total, max_page_size);
        if numbers.pages > 0 {
            numbers.current = numbers.current.min(numbers.pages);
        }
        // (The largest offset, with a limit of 1, would number the page one past what a
        // client's 64-bit integer holds.)
        numbers.current = numbers.current.min(i64::MAX as u64);
        numbers
    }

    fn unclamped_numbers(&self, total: u64, max_page_size: u64) -> PageNumbers {
        match self.limit {
            Some(limit) => PageNumbers {
                current: self.offset / limit + 1,
                pages: total.div_ceil(limit),
                size: limit,
            },
            // One page of every matching job, up to the largest page; an offset numbers the
            // page of that size it falls in.
            None => {
                let size = total.min(max_page_size);
                match size {
                    0 => PageNumbers {
                        current: 1,
                        pages: 0,
                        size,
                    },
                    _ => PageNumbers {
                        current: self.offset / size + 1,
                        pages: total.div_ceil(size),
                        size,
                    },
                }
            }
        }
    }
}

/// `current`, `pages` and `size` of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageNumbers {
    pub current: u64,
    pub pages: u64,
    pub size: u64,
}

/// The job list's validated query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListJobsQuery {
    pub filter: JobFilter,
    pub page: PageRequest,
}

/// A boolean query value, `true` or `false` in any case.
pub fn parse_bool(field: &str, raw: &str) -> Result<bool, Invalid> {
    if raw.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if raw.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(Invalid(format!("{field} must be true or false")))
    }
}

fn parse_u64(field: &str, raw: &str) -> Result<u64, Invalid> {
    raw.parse::<u64>()
        .map_err(|_| Invalid(format!("{field} must be a non-negative integer")))
}

/// The query parameters the job list reads: the seed's five filters, then the paging and
/// order extensions.
pub const LIST_JOBS_PARAMETERS: [&str; 9] = [
    "id", "name", "type", "status", "visible", "limit", "offset", "sort_key", "sort_dir",
];

impl ListJobsQuery {
    /// Validates the decoded query pairs. Unknown parameters are ignored; a parameter given
    /// twice, or given with an empty value, is an error.
    pub fn parse(pairs: &[(String, String)], max_page_size: u64) -> Result<Self, Invalid> {
        let mut q = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            let Some(key) = LIST_JOBS_PARAMETERS.iter().find(|k| **k == key) else {
                continue;
            };
            if seen.contains(key) {
                return Err(Invalid(format!("{key} is given more than once")));
            }
            seen.push(key);
            if value.is_empty() {
                return Err(Invalid(format!("{key} must not be empty")));
            }
            match *key {
                "id" => {
                    lookup("id", value)?;
                    q.filter.id = Some(value.clone());
                }
                "name" => {
                    lookup("name", value)?;
                    q.filter.name = Some(value.clone());
                }
                "type" => {
                    simple_name("type", value)?;
                    q.filter.job_type = Some(value.clone());
                }
                "status" => q.filter.status = Some(JobStatus::parse(value)?),
                "visible" => q.filter.visible = Some(parse_bool("visible", value)?),
                "limit" => {
                    let limit = parse_u64("limit", value)?;
                    if !(1..=max_page_size).contains(&limit) {
                        return Err(Invalid(format!(
                            "limit must be between 1 and {max_page_size}"
                        )));
                    }
                    q.page.limit = Some(limit);
                }
                "offset" => {
                    q.page.offset = parse_u64("offset", value)?;
                    if q.page.offset > i64::MAX as u64 {
                        return Err(Invalid::new("offset is too large"));
                    }
                }
                "sort_key" => {
                    q.page.sort_key = match value.as_str() {
                        "create_at" => SortKey::CreateAt,
                        "update_at" => SortKey::UpdateAt,
                        "name" => SortKey::Name,
                        _ => {
                            return Err(Invalid::new(
                                "sort_key must be one of create_at, update_at, name",
                            ))
                        }
                    }
                }
                _ => {
                    q.page.sort_dir = match value.as_str() {
                        "asc" => SortDir::Asc,
                        "desc" => SortDir::Desc,
                        _ => return Err(Invalid::new("sort_dir must be asc or desc")),
                    }
                }
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_filter() {
        let q = ListJobsQuery::parse(
            &pairs(&[
                ("id", "a"),
                ("name", "My Job"),
                ("type", "COMMON"),
                ("status", "FINISHED"),
                ("visible", "FALSE"),
                ("other", ""),
            ]),
            1000,
        )
        .expect("valid");
        assert_eq!(q.filter.id.as_deref(), Some("a"));
        assert_eq!(q.filter.name.as_deref(), Some("My Job"));
        assert_eq!(q.filter.status, Some(JobStatus::Finished));
        assert_eq!(q.filter.visible, Some(false));
        assert_eq!(q.page, PageRequest::default());
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            ("status", "finished"),
            ("status", ""),
            ("visible", "yes"),
            ("type", "a b"),
            ("limit", "0"),
            ("limit", "1001"),
            ("offset", "-1"),
            ("sort_key", "id"),
            ("sort_dir", "up"),
        ] {
            assert!(
                ListJobsQuery::parse(&pairs(&[bad]), 1000).is_err(),
                "{bad:?} must be rejected"
            );
        }
        assert!(ListJobsQuery::parse(&pairs(&[("id", "a"), ("id", "b")]), 1000).is_err());
    }

    #[test]
    fn page_numbers_follow_the_design() {
        let whole = PageRequest::default();
        let n = whole.numbers(2, 1000);
        assert_eq!((n.current, n.pages, n.size), (1, 1, 2));
        let n = whole.numbers(0, 1000);
        assert_eq!((n.current, n.pages, n.size), (1, 0, 0));
        let n = whole.numbers(2500, 1000);
        assert_eq!((n.current, n.pages, n.size), (1, 3, 1000));
        let paged = PageRequest {
            limit: Some(10),
            offset: 25,
            ..PageRequest::default()
        };
        let n = paged.numbers(31, 1000);
        assert_eq!((n.current, n.pages, n.size), (3, 4, 10));
        // Past the end: the last page's number while the list holds jobs.
        let past = PageRequest {
            limit: Some(10),
            offset: 50,
            ..PageRequest::default()
        };
        let n = past.numbers(20, 1000);
        assert_eq!((n.current, n.pages, n.size), (2, 2, 10));
        let n = past.numbers(0, 1000);
        assert_eq!((n.current, n.pages, n.size), (6, 0, 10));
        let farthest = PageRequest {
            limit: Some(1),
            offset: i64::MAX as u64,
            ..PageRequest::default()
        };
        assert_eq!(farthest.numbers(0, 1000).current, i64::MAX as u64);
        let unlimited = PageRequest {
            offset: 3000,
            ..PageRequest::default()
        };
        let n = unlimited.numbers(2500, 1000);
        assert_eq!((n.current, n.pages, n.size), (3, 3, 1000));
        // An offset without a limit keeps the size of the page without one.
        let from_second = PageRequest {
            offset: 1,
            ..PageRequest::default()
        };
        let n = from_second.numbers(2, 1000);
        assert_eq!((n.current, n.pages, n.size), (1, 1, 2));
        let n = from_second.numbers(0, 1000);
        assert_eq!((n.current, n.pages, n.size), (1, 0, 0));
        let n = unlimited.numbers(15, 1000);
        assert_eq!((n.current, n.pages, n.size), (1, 1, 15));
    }
}
