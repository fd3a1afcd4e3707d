//! Validated identifiers.

use std::fmt;

use super::Invalid;

/// A project id: 1 to 64 letters, digits or hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(Invalid::new(
                "project_id must be 1 to 64 letters, digits or hyphens",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True for an environment variable's name a shell takes: `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True for `^[-_.a-zA-Z0-9]{1,64}$`, the pattern of job names, descriptions and types.
pub fn is_simple_name(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a field against [`is_simple_name`], naming the field in the error.
pub fn simple_name(field: &str, value: &str) -> Result<(), Invalid> {
    if is_simple_name(value) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "{field} must match ^[-_.a-zA-Z0-9]{{1,64}}$"
        )))
    }
}

/// Checks a free-form identifier given by a client: 1 to 64 characters, none of them a
/// control character (PostgreSQL's text cannot hold U+0000, and no id or name needs one).
pub fn bounded(field: &str, value: &str) -> Result<(), Invalid> {
    let n = value.chars().count();
    if (1..=64).contains(&n) && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "{field} must be 1 to 64 characters, none of them a control character"
        )))
    }
}

/// Checks a value a client looks up (a filter, an id to show or delete): 1 to 64
/// characters, any of them. One that no stored id or name can hold, such as U+0000, simply
/// matches nothing (see [`holds_nul`]).
pub fn lookup(field: &str, value: &str) -> Result<(), Invalid> {
    if (1..=64).contains(&value.chars().count()) {
        Ok(())
    } else {
        Err(Invalid(format!("{field} must be 1 to 64 characters")))
    }
}

/// True for a looked-up value holding U+0000: no stored text holds it (PostgreSQL's text
/// cannot, and [`bounded`] refuses it), so it matches nothing, and it is not sent to the
/// database, which would refuse it.
pub fn holds_nul(value: &str) -> bool {
    value.contains('\0')
}

/// A new random id (UUIDv4, lower-case, hyphenated): the ids of jobs.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new task id: a UUIDv7 (lower-case, hyphenated), which starts with the time, so that new
/// tasks are added at the end of the task indexes instead of all over them (a create writes
/// one task per server). Its 74 random bits keep it unguessable.
pub fn new_task_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_time_ordered_uuids() {
        let ids: Vec<String> = (0..3)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                new_task_id()
            })
            .collect();
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 7);
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        assert_eq!(
            uuid::Uuid::parse_str(&new_id())
                .expect("a UUID")
                .get_version_num(),
            4
        );
    }

    #[test]
    fn project_ids_are_letters_digits_and_hyphens() {
        assert!(ProjectId::parse("0a1b-C").is_ok());
        assert!(ProjectId::parse("").is_err());
        assert!(ProjectId::parse(&"a".repeat(65)).is_err());
        assert!(ProjectId::parse("a_b").is_err());
        assert!(ProjectId::parse("a/b").is_err());
    }

    #[test]
    fn bounded_values_have_no_control_characters() {
        assert!(bounded("id", "Ünïcode name-1").is_ok());
        assert!(bounded("id", &"é".repeat(64)).is_ok());
        assert!(bounded("id", &"é".repeat(65)).is_err());
        assert!(bounded("id", "").is_err());
        for bad in ["a\0b", "\0", "tab\there", "line\n", "\u{7f}", "\u{85}"] {
            let err = bounded("id", bad).expect_err(bad);
            assert!(err.0.contains("id must be"), "{}", err.0);
            // Looked up, the same value is valid, and matches nothing when it holds U+0000.
            assert!(lookup("id", bad).is_ok());
            assert_eq!(holds_nul(bad), bad.contains('\0'));
        }
        assert!(lookup("id", "").is_err());
        assert!(lookup("id", &"\0".repeat(65)).is_err());
    }

    #[test]
    fn simple_names_follow_the_contract_pattern() {
        assert!(is_simple_name("job-a_1.2"));
        assert!(!is_simple_name("job a"));
        assert!(!is_simple_name(""));
        assert!(!is_simple_name(&"x".repeat(65)));
        assert!(!is_simple_name("jöb"));
    }
}
