//! The job list's planner: from a query and what the store knows, the plan of how to read
//! a page and its exact total. Pure: no database, no I/O; each backend executes plans with
//! its own SQL (`sqlite/list.rs`, `postgres/list.rs`).
//!
//! The decisions, in order:
//! - An `id` or `name` holding U+0000 matches nothing: no statement at all.
//! - The total comes from the counters kept by triggers (the project's one total when no
//!   `status`, `type` or `visible` is asked, else the per-key counters), unless an `id` or
//!   a `name` is asked: then the matching rows themselves are counted.
//! - A `name` is looked for through a name index when one serves the pattern (which one
//!   depends on the backend and the pattern's length), unless an `id` is asked too: the
//!   id's index finds its one row, whose name is then checked.
//! - The first page (what the SDK and consoles ask):
//!   - with counters: the page and its total by one statement;
//!   - through a name index: one statement finds the matching jobs once, counts them and
//!     takes the page (the page reads every candidate to order them anyway);
//!   - otherwise (an `id`, or a name no index serves): the page first; when it is not full it
//!     is the whole answer, and only a full page has its total counted.
//! - Any other page: the total first, then the page read from the nearer end ([`window`]).
//!   On PostgreSQL, where each is a round trip, a page whose total the counters keep is one
//!   statement with its total, read from the end nearer to it by the total the store last
//!   read for the same filter (the total read with the page places it, so an old total
//!   costs speed, never exactness); without such a total, and when the page is empty, the
//!   total and the page as above.

use crate::domain::filter::{JobFilter, ListJobsQuery, SortDir, SortKey};
use crate::domain::ids::is_simple_name;

// The database engine a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// What the store knows beyond the query when it plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub engine: Engine,
    /// The project holds [`LARGE_PROJECT`] jobs or more (asked only where
    /// [`wants_project_size`] says it matters).
    pub large_project: bool,
    /// The number of jobs matching the query's filter that the store last read, if it
    /// read one lately (asked only where [`wants_last_total`] says it matters).
    pub last_total: Option<u64>,
}

/// Jobs in a project from which its name searches on PostgreSQL ask the name index for
/// every project's names: the index hands over a project's candidates by reading through its
/// entry for the project, which for a large project costs more than the few candidates of a
/// selective pattern in all projects together (see `docs/design/job-list.md`).
pub const LARGE_PROJECT: u64 = 100_000;

/// How a page and its total are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steps {
    /// No job can match: an empty page, total 0, no statement.
    Nothing,
    /// The first page and its total from the counters, in one statement.
    FirstPageWithTotal,
    /// The first page and the number of matching jobs, which one statement finds once
    /// through a name index.
    FirstPageCountingMatches,
    /// The first page; when it is full, its total counted in the same snapshot.
    FirstPageThenCount,
    /// The total, then the page from the nearer end ([`window`]), in one snapshot.
    CountThenPage,
    /// A later page and its total from the counters, in one statement, read from the end
    /// ([`window`]) or from the start as [`Facts::last_total`] places it; when it is empty,
    /// [`Steps::CountThenPage`] (the empty page holds no total). PostgreSQL only.
    PageWithTotal { from_end: bool },
}

/// Where the total comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// The project's one counter (`job_totals`): no `status`, `type` or `visible` asked.
    ProjectTotal,
    /// The counters per status, type and visibility (`job_counts`).
    KeyCounters,
    /// The matching rows, counted.
    Rows,
}

impl Count {
    /// The counters' table, or `None` when rows are counted.
    pub fn table(self) -> Option<&'static str> {
        match self {
            Self::ProjectTotal => Some("job_totals"),
            Self::KeyCounters => Some("job_counts"),
            Self::Rows => None,
        }
    }
}

/// A name index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameIndex {
    /// Each name's 4-character substrings: patterns of four characters or more.
    Grams,
    /// Each name's trigrams: patterns of three characters.
    Trigrams,
}

/// Whose names a name index is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameScope {
    /// The project's own (the index is led by the project, or the candidates are checked).
    Project,
    /// Every project's names holding the pattern, the project's kept after.
    AllProjects,
}

/// How jobs matching a `name` are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSearch {
    /// Candidates from a name index, each then checked.
    Index(NameIndex, NameScope),
    /// Each row read otherwise (the project's, or the one an `id` finds) is checked.
    Check,
}

/// How the list reads one page and its total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPlan {
    pub steps: Steps,
    pub count: Count,
    /// How a `name` is looked for; `None` without one.
    pub name: Option<NameSearch>,
    /// Rows the page holds at most.
    pub limit: u64,
}

/// The name index that serves `pattern` on `engine`, if any. SQLite's 4-gram index holds
/// the names' lower-cased 4-grams of name characters (`[-_.a-zA-Z0-9]`), so it serves such
/// patterns of four characters or more; its trigram index serves any three characters or
/// more but control characters. PostgreSQL's serve any pattern of four, or three,
/// characters or more.
pub fn name_index(pattern: &str, engine: Engine) -> Option<NameIndex> {
    let chars = pattern.chars().count();
    match engine {
        Engine::Sqlite if pattern.len() >= 4 && is_simple_name(pattern) => Some(NameIndex::Grams),
        Engine::Sqlite if chars >= 3 && !pattern.chars().any(char::is_control) => {
            Some(NameIndex::Trigrams)
        }
        Engine::Sqlite => None,
        Engine::Postgres if chars >= 4 => Some(NameIndex::Grams),
        Engine::Postgres if chars == 3 => Some(NameIndex::Trigrams),
        Engine::Postgres => None,
    }
}

/// True when the plan depends on the project's size: a name a name index serves, on
/// PostgreSQL.
pub fn wants_project_size(query: &ListJobsQuery, engine: Engine) -> bool {
    engine == Engine::Postgres && indexed_name(&query.filter, engine).is_some()
}

/// True when the plan depends on the total the store last read for the query's filter: a
/// later page whose total the counters keep, on PostgreSQL.
pub fn wants_last_total(query: &ListJobsQuery, engine: Engine) -> bool {
    engine == Engine::Postgres
        && query.page.offset > 0
        && query.filter.id.is_none()
        && query.filter.name.is_none()
}

/// The name index a filter's `name` goes through: one that serves the pattern, and no `id`.
fn indexed_name(filter: &JobFilter, engine: Engine) -> Option<NameIndex> {
    if filter.id.is_some() {
        return None;
    }
    name_index(filter.name.as_deref()?, engine)
}

/// True when the filter asks for no `status`, `type` or `visible`.
fn by_project_alone(filter: &JobFilter) -> bool {
    filter.status.is_none() && filter.job_type.is_none() && filter.visible.is_none()
}

/// The plan of one page of `query` (with `max_page_size` when it asks no `limit`).
pub fn plan(query: &ListJobsQuery, max_page_size: u64, facts: Facts) -> ListPlan {
    let filter = &query.filter;
    let limit = query.page.effective_limit(max_page_size);
    let count = if filter.id.is_some() || filter.name.is_some() {
        Count::Rows
    } else if by_project_alone(filter) {
        Count::ProjectTotal
    } else {
        Count::KeyCounters
    };
    let indexed = indexed_name(filter, facts.engine);
    let name = filter.name.as_ref().map(|_| match indexed {
        Some(index) if facts.large_project && facts.engine == Engine::Postgres => {
            NameSearch::Index(index, NameScope::AllProjects)
        }
        Some(index) => NameSearch::Index(index, NameScope::Project),
        None => NameSearch::Check,
    });
    let steps = if filter.matches_nothing() {
        Steps::Nothing
    } else if query.page.offset > 0 {
        match facts.last_total {
            Some(total) if wants_last_total(query, facts.engine) => Steps::PageWithTotal {
                from_end: query.page.offset > total / 2,
            },
            _ => Steps::CountThenPage,
        }
    } else if count != Count::Rows {
        Steps::FirstPageWithTotal
    } else if indexed.is_some() {
        Steps::FirstPageCountingMatches
    } else {
        Steps::FirstPageThenCount
    };
    ListPlan {
        steps,
        count,
        name,
        limit,
    }
}

/// The column and direction of `ORDER BY` for a sort (ties are broken by `id` in the same
/// direction).
pub fn order_sql(order: (SortKey, SortDir)) -> (&'static str, &'static str) {
    let col = match order.0 {
        SortKey::CreateAt => "create_at",
        SortKey::UpdateAt => "update_at",
        SortKey::Name => "name",
    };
    let dir = match order.1 {
        SortDir::Asc => "ASC",
        SortDir::Desc => "DESC",
    };
    (col, dir)
}

/// Where a page other than the first is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Direction to read in.
    pub dir: SortDir,
    pub skip: u64,
    pub take: u64,
    /// Read from the other end: the rows come in the opposite order of the page's.
    pub reversed: bool,
}

/// How to read `limit` rows after `offset` of `total` rows in direction `dir`; `None` when
/// the page is empty. A page in the far half is read from the other end: the database then
/// skips fewer rows, and exact totals make the two readings identical.
pub fn window(dir: SortDir, offset: u64, limit: u64, total: u64) -> Option<Window> {
    if offset >= total || limit == 0 {
        return None;
    }
    let end = offset.saturating_add(limit).min(total);
    Some(if offset > total / 2 {
        Window {
            dir: dir.reverse(),
            skip: total - end,
            take: end - offset,
            reversed: true,
        }
    } else {
        Window {
            dir,
            skip: offset,
            take: end - offset,
            reversed: false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(raw: &str) -> ListJobsQuery {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect();
        ListJobsQuery::parse(&pairs, 1000).expect("query")
    }

    const SQLITE: Facts = Facts {
        engine: Engine::Sqlite,
        large_project: false,
        last_total: None,
    };
    const POSTGRES: Facts = Facts {
        engine: Engine::Postgres,
        large_project: false,
        last_total: None,
    };
    const LARGE_POSTGRES: Facts = Facts {
        engine: Engine::Postgres,
        large_project: true,
        last_total: None,
    };

    fn planned(raw: &str, facts: Facts) -> (Steps, Count, Option<NameSearch>) {
        let p = plan(&query(raw), 1000, facts);
        (p.steps, p.count, p.name)
    }

    #[test]
    fn first_pages_without_id_or_name_read_their_total_from_the_counters() {
        for facts in [SQLITE, POSTGRES] {
            for raw in ["", "limit=50", "sort_key=name&sort_dir=asc"] {
                let expected = (Steps::FirstPageWithTotal, Count::ProjectTotal, None);
                assert_eq!(planned(raw, facts), expected, "{raw}");
            }
            for raw in [
                "status=FINISHED",
                "type=COMMON&visible=false",
                "visible=true",
            ] {
                let expected = (Steps::FirstPageWithTotal, Count::KeyCounters, None);
                assert_eq!(planned(raw, facts), expected, "{raw}");
            }
        }
    }

    #[test]
    fn later_pages_count_first() {
        for facts in [SQLITE, POSTGRES] {
            assert_eq!(
                planned("offset=50&limit=50", facts),
                (Steps::CountThenPage, Count::ProjectTotal, None)
            );
            assert_eq!(
                planned("offset=1&status=DELETED", facts),
                (Steps::CountThenPage, Count::KeyCounters, None)
            );
            let (steps, count, _) = planned("offset=10&name=abcd", facts);
            assert_eq!((steps, count), (Steps::CountThenPage, Count::Rows));
        }
    }

    #[test]
    fn later_pages_on_postgres_are_read_with_their_total_from_the_end_the_last_total_places() {
        let with_total = |engine, total| Facts {
            engine,
            large_project: false,
            last_total: Some(total),
        };
        let from_end = |from_end| Steps::PageWithTotal { from_end };
        let cases = [
            ("offset=50&limit=50", 1000, from_end(false)),
            ("offset=500&limit=50", 1000, from_end(false)),
            ("offset=501&limit=50", 1000, from_end(true)),
            // An old total: the page is still read, from the end it placed.
            ("offset=5000", 1000, from_end(true)),
            ("offset=1&status=DELETED", 0, from_end(true)),
            ("offset=1&type=COMMON&visible=true", 3, from_end(false)),
            // Rows counted: the total, then the page.
            ("offset=10&name=abcd", 1000, Steps::CountThenPage),
            ("offset=10&id=job-1", 1000, Steps::CountThenPage),
        ];
        for (raw, total, steps) in cases {
            let (found, _, _) = planned(raw, with_total(Engine::Postgres, total));
            assert_eq!(found, steps, "{raw} ({total})");
            // SQLite's count and page are statements on the request's thread, no round trip.
            let (found, _, _) = planned(raw, with_total(Engine::Sqlite, total));
            assert_eq!(found, Steps::CountThenPage, "{raw} ({total})");
        }
        assert!(wants_last_total(&query("offset=1"), Engine::Postgres));
        assert!(wants_last_total(
            &query("offset=1&status=FINISHED"),
            Engine::Postgres
        ));
        assert!(!wants_last_total(&query("offset=1"), Engine::Sqlite));
        assert!(!wants_last_total(&query(""), Engine::Postgres));
        assert!(!wants_last_total(
            &query("offset=1&name=abcd"),
            Engine::Postgres
        ));
        assert!(!wants_last_total(&query("offset=1&id=x"), Engine::Postgres));
    }

    #[test]
    fn an_id_reads_its_row_and_counts_only_a_full_page() {
        for facts in [SQLITE, POSTGRES, LARGE_POSTGRES] {
            assert_eq!(
                planned("id=job-1", facts),
                (Steps::FirstPageThenCount, Count::Rows, None)
            );
            assert_eq!(
                planned("id=job-1&name=abcdef&status=FINISHED", facts),
                (
                    Steps::FirstPageThenCount,
                    Count::Rows,
                    Some(NameSearch::Check)
                )
            );
        }
    }

    #[test]
    fn names_go_through_the_index_that_serves_their_length() {
        let grams = |scope| Some(NameSearch::Index(NameIndex::Grams, scope));
        let trigrams = |scope| Some(NameSearch::Index(NameIndex::Trigrams, scope));
        let cases = [
            ("name=1F1F1", SQLITE, grams(NameScope::Project)),
            ("name=abc", SQLITE, trigrams(NameScope::Project)),
            ("name=ab", SQLITE, Some(NameSearch::Check)),
            ("name=a%01bc", SQLITE, Some(NameSearch::Check)),
            ("name=ab%20c", SQLITE, trigrams(NameScope::Project)),
            // Not a name's characters: SQLite's 4-gram index cannot hold it.
            ("name=%C3%A9-abc", SQLITE, trigrams(NameScope::Project)),
            ("name=%C3%A9-abc", POSTGRES, grams(NameScope::Project)),
            ("name=1F1F1", POSTGRES, grams(NameScope::Project)),
            ("name=abc", POSTGRES, trigrams(NameScope::Project)),
            ("name=ab", POSTGRES, Some(NameSearch::Check)),
            ("name=1F1F1", LARGE_POSTGRES, grams(NameScope::AllProjects)),
            ("name=abc", LARGE_POSTGRES, trigrams(NameScope::AllProjects)),
            ("name=ab", LARGE_POSTGRES, Some(NameSearch::Check)),
        ];
        for (raw, facts, name) in cases {
            let (steps, count, found) = planned(raw, facts);
            assert_eq!(found, name, "{raw} {facts:?}");
            assert_eq!(count, Count::Rows, "{raw}");
            let expected = if matches!(name, Some(NameSearch::Index(..))) {
                Steps::FirstPageCountingMatches
            } else {
                Steps::FirstPageThenCount
            };
            assert_eq!(steps, expected, "{raw} {facts:?}");
        }
        // Only a large project on PostgreSQL asks every project's names.
        assert!(wants_project_size(&query("name=abcd"), Engine::Postgres));
        assert!(!wants_project_size(&query("name=abcd"), Engine::Sqlite));
        assert!(!wants_project_size(&query("name=ab"), Engine::Postgres));
        assert!(!wants_project_size(
            &query("name=abcd&id=x"),
            Engine::Postgres
        ));
    }

    #[test]
    fn a_nul_in_an_id_or_a_name_matches_nothing() {
        for raw in [
            "id=a%00b",
            "name=a%00b&status=FINISHED",
            "name=%00&offset=5",
        ] {
            for facts in [SQLITE, POSTGRES] {
                assert_eq!(
                    plan(&query(raw), 1000, facts).steps,
                    Steps::Nothing,
                    "{raw}"
                );
            }
        }
    }

    #[test]
    fn the_limit_is_the_asked_one_or_the_largest_page() {
        assert_eq!(plan(&query("limit=7"), 1000, SQLITE).limit, 7);
        assert_eq!(plan(&query(""), 300, SQLITE).limit, 300);
    }

    #[test]
    fn far_pages_are_read_from_the_other_end() {
        use SortDir::{Asc, Desc};
        assert_eq!(window(Desc, 0, 10, 0), None);
        assert_eq!(window(Desc, 10, 10, 10), None);
        assert_eq!(
            window(Desc, 20, 10, 100),
            Some(Window {
                dir: Desc,
                skip: 20,
                take: 10,
                reversed: false
            })
        );
        // The last 25 of 100, read backwards: skip none, take 25.
        assert_eq!(
            window(Desc, 75, 50, 100),
            Some(Window {
                dir: Asc,
                skip: 0,
                take: 25,
                reversed: true
            })
        );
        assert_eq!(
            window(Asc, 60, 10, 100),
            Some(Window {
                dir: Desc,
                skip: 30,
                take: 10,
                reversed: true
            })
        );
    }
}
