//! Actions and the policies that grant them.
//!
//! A user holds policies per project; a policy is a list of action patterns where `*` matches
//! any run of characters (`modelarts:*`, `modelarts:devserverJob:*`, `*:list`).

/// What a request does; each API operation needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ListJobs,
    GetJob,
    CreateJob,
    DeleteJobs,
    ListTemplates,
    GetTemplate,
    /// A node agent registers its server, leases the server's tasks and reports results.
    RunAgent,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Self::ListJobs,
        Self::GetJob,
        Self::CreateJob,
        Self::DeleteJobs,
        Self::ListTemplates,
        Self::GetTemplate,
        Self::RunAgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ListJobs => "modelarts:devserverJob:list",
            Self::GetJob => "modelarts:devserverJob:get",
            Self::CreateJob => "modelarts:devserverJob:create",
            Self::DeleteJobs => "modelarts:devserverJob:delete",
            Self::ListTemplates => "modelarts:devserverJobTemplate:list",
            Self::GetTemplate => "modelarts:devserverJobTemplate:get",
            Self::RunAgent => "modelarts:devserverAgent:run",
        }
    }
}

/// Built-in policies: `(name, action patterns)`.
pub const BUILTIN_POLICIES: [(&str, &[&str]); 2] = [
    ("ModelArts FullAccess", &["modelarts:*"]),
    (
        "ModelArts ReadOnlyAccess",
        &["modelarts:*:list", "modelarts:*:get"],
    ),
];

/// True when `pattern` (with `*` wildcards) matches `action`.
pub fn pattern_matches(pattern: &str, action: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == action;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !action.starts_with(first) || action.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &action[first.len()..];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// True when any of the patterns grants `action`.
pub fn allows<S: AsRef<str>>(patterns: &[S], action: Action) -> bool {
    patterns
        .iter()
        .any(|p| pattern_matches(p.as_ref(), action.as_str()))
}

/// Checks an action pattern an administrator writes into a policy: its characters, and
/// that it grants some action (a pattern with a typo would grant nothing, silently).
pub fn valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 128
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'*' | b'-' | b'_'))
        && Action::ALL
            .iter()
            .any(|a| pattern_matches(pattern, a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_actions() {
        assert!(pattern_matches(
            "modelarts:*",
            "modelarts:devserverJob:list"
        ));
        assert!(pattern_matches("*", "modelarts:devserverJob:list"));
        assert!(pattern_matches(
            "modelarts:*:list",
            "modelarts:devserverJob:list"
        ));
        assert!(!pattern_matches(
            "modelarts:*:list",
            "modelarts:devserverJob:create"
        ));
        assert!(pattern_matches(
            "modelarts:devserverJob:get",
            "modelarts:devserverJob:get"
        ));
        assert!(!pattern_matches(
            "modelarts:devserverJob:get",
            "modelarts:devserverJob:getx"
        ));
        assert!(!pattern_matches("a*a", "a"));
    }

    #[test]
    fn a_pattern_must_grant_some_action() {
        for good in ["modelarts:*", "*", "modelarts:devserverJob:list", "*:get"] {
            assert!(valid_pattern(good), "{good}");
        }
        for bad in [
            "notanaction",
            "modelarts:devserverJobs:list",
            "",
            "modelarts:job:*",
            "a b",
        ] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn read_only_policy_cannot_create_or_delete() {
        let read_only = BUILTIN_POLICIES[1].1;
        assert!(allows(read_only, Action::ListJobs));
        assert!(allows(read_only, Action::GetTemplate));
        assert!(!allows(read_only, Action::CreateJob));
        assert!(!allows(read_only, Action::DeleteJobs));
    }
}
