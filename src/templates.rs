//! Job templates: the built-in ones shipped as data files in `templates/`, plus any an
//! operator adds from a directory. A job's `type` names its template.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use regex::{Regex, RegexBuilder};

use crate::domain::ids::is_simple_name;
use crate::domain::Invalid;
use crate::wire::{TemplateDetail, TemplateListItem};

const BUILTIN: [(&str, &str); 5] = [
    ("common.json", include_str!("../templates/common.json")),
    (
        "log_collect.json",
        include_str!("../templates/log_collect.json"),
    ),
    (
        "device_log_collect.json",
        include_str!("../templates/device_log_collect.json"),
    ),
    (
        "ascend_diagnosis.json",
        include_str!("../templates/ascend_diagnosis.json"),
    ),
    (
        "ascend_software_upgrade.json",
        include_str!("../templates/ascend_software_upgrade.json"),
    ),
];

/// Every template the service offers, in a stable order, with the rules of their parameters.
#[derive(Debug, Clone)]
pub struct TemplateCatalog {
    templates: Vec<TemplateDetail>,
    /// Each template's parameter rules, by template id.
    rules: HashMap<String, Vec<ParamRule>>,
}

/// A parameter's rule: its value must match the regular expression the template declares.
/// Its syntax is checked when the template loads.
#[derive(Debug, Clone)]
struct ParamRule {
    name: String,
    pattern: String,
    check: Check,
    /// The parameter's value when an item's spec does not give one.
    default: String,
}

/// How a rule is checked.
#[derive(Debug, Clone)]
enum Check {
    /// A rule that only bounds a value's length after a fixed prefix (`^.{1,4096}$`,
    /// `^/.{0,1023}$`): checked by counting characters. Compiled, such a rule takes some
    /// milliseconds and some megabytes per thread that matches with it.
    Length {
        prefix: String,
        min: usize,
        max: Option<usize>,
    },
    /// Any other rule, compiled when a value is first checked against it (the server's
    /// start need not wait for it).
    Regex(Arc<OnceLock<Result<Regex, String>>>),
}

/// Largest compiled form of a parameter's regular expression.
const REGEX_SIZE_LIMIT: usize = 64 << 20;

impl ParamRule {
    fn new(name: &str, pattern: &str, default: &str) -> anyhow::Result<Self> {
        let hir = regex_syntax::ParserBuilder::new()
            .dot_matches_new_line(true)
            .build()
            .parse(pattern)?;
        let check = length_rule(&hir).unwrap_or_else(|| Check::Regex(Arc::default()));
        Ok(Self {
            name: name.to_string(),
            pattern: pattern.to_string(),
            check,
            default: default.to_string(),
        })
    }

    /// True when `value` matches; an expression too large to compile is a fault of the
    /// template, answered as the service's.
    fn matches(&self, value: &str) -> anyhow::Result<bool> {
        let regex = match &self.check {
            Check::Length { prefix, min, max } => {
                return Ok(value.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                    let n = rest.chars().count();
                    n >= *min && max.is_none_or(|max| n <= max)
                }))
            }
            Check::Regex(regex) => regex,
        };
        let compiled = regex.get_or_init(|| {
            RegexBuilder::new(&self.pattern)
                .dot_matches_new_line(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())
        });
        match compiled {
            Ok(regex) => Ok(regex.is_match(value)),
            Err(e) => anyhow::bail!("parameter {}: rule {}: {e}", self.name, self.pattern),
        }
    }
}

/// The length rule `hir` is, when it is `^` `literal`? `.{m,n}` `$` (`.` matching any
/// character).
fn length_rule(hir: &regex_syntax::hir::Hir) -> Option<Check> {
    use regex_syntax::hir::{Class, HirKind, Look};
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let (first, rest) = parts.split_first()?;
    let (last, middle) = rest.split_last()?;
    if !matches!(first.kind(), HirKind::Look(Look::Start))
        || !matches!(last.kind(), HirKind::Look(Look::End))
    {
        return None;
    }
    let (prefix, repetition) = match middle {
        [repetition] => (String::new(), repetition),
        [literal, repetition] => match literal.kind() {
            HirKind::Literal(l) => (String::from_utf8(l.0.to_vec()).ok()?, repetition),
            _ => return None,
        },
        _ => return None,
    };
    let HirKind::Repetition(r) = repetition.kind() else {
        return None;
    };
    let any_char = match r.sub.kind() {
        HirKind::Class(Class::Unicode(class)) => {
            class.ranges().len() == 1
                && class.ranges()[0].start() == '\0'
                && class.ranges()[0].end() == char::MAX
        }
        _ => false,
    };
    any_char.then(|| Check::Length {
        prefix,
        min: r.min as usize,
        max: r.max.map(|m| m as usize),
    })
}

/// The rules of a template's parameters. `.` matches line breaks too: a command may span
/// lines, and a rule such as `^.{1,4096}$` is about its length.
fn rules(origin: &str, t: &TemplateDetail) -> anyhow::Result<Vec<ParamRule>> {
    let mut rules = Vec::new();
    for p in t.params.iter().filter(|p| !p.regex.is_empty()) {
        let rule = ParamRule::new(&p.name, &p.regex, &p.value)
            .with_context(|| format!("template {origin}: parameter {}: bad regex", p.name))?;
        rules.push(rule);
    }
    Ok(rules)
}

/// Longest timeout a template may give its tasks: a week.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

fn parse(origin: &str, raw: &str) -> anyhow::Result<TemplateDetail> {
    let t: TemplateDetail =
        serde_json::from_str(raw).with_context(|| format!("template {origin} is malformed"))?;
    anyhow::ensure!(
        is_simple_name(&t.template_type),
        "template {origin}: type must match ^[-_.a-zA-Z0-9]{{1,64}}$"
    );
    anyhow::ensure!(
        !t.id.is_empty() && t.id.len() <= 64,
        "template {origin}: bad id"
    );
    anyhow::ensure!(
        t.timeout
            .parse::<u64>()
            .is_ok_and(|secs| (1..=MAX_TIMEOUT_SECS).contains(&secs)),
        "template {origin}: timeout must be a number of seconds from 1 to {MAX_TIMEOUT_SECS}"
    );
    Ok(t)
}

impl TemplateCatalog {
    /// The built-in templates, and those of `extra_dir` (`*.json`, one template each), which
    /// replace a built-in of the same type.
    pub fn load(extra_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut templates = Vec::new();
        for (name, raw) in BUILTIN {
            templates.push(parse(name, raw)?);
        }
        if let Some(dir) = extra_dir {
            let mut paths: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read template directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            paths.sort();
            for path in paths {
                let raw = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let t = parse(&path.display().to_string(), &raw)?;
                templates.retain(|old| old.template_type != t.template_type && old.id != t.id);
                templates.push(t);
            }
        }
        let mut all_rules = HashMap::new();
        for t in &templates {
            all_rules.insert(t.id.clone(), rules(&t.id, t)?);
        }
        Ok(Self {
            templates,
            rules: all_rules,
        })
    }

    /// Checks an item's `spec` (at `items[index]`) against the rules of `template`'s
    /// parameters: the value each parameter with a rule takes (the spec's, else the
    /// template's default, as the task runs with it) must match it. A parameter whose
    /// default does not (COMMON's empty `cmd`) must be given.
    pub fn check_spec(
        &self,
        template: &TemplateDetail,
        index: usize,
        spec: Option<&BTreeMap<String, String>>,
    ) -> Result<Result<(), Invalid>, anyhow::Error> {
        let Some(rules) = self.rules.get(&template.id) else {
            return Ok(Ok(()));
        };
        for rule in rules {
            let Some(value) = spec.and_then(|spec| spec.get(&rule.name)) else {
                if !rule.matches(&rule.default)? {
                    return Ok(Err(Invalid(format!(
                        "items[{index}].spec.{} is required by the {} template (rule {})",
                        rule.name, template.template_type, rule.pattern
                    ))));
                }
                continue;
            };
            if !rule.matches(value)? {
                return Ok(Err(Invalid(format!(
                    "items[{index}].spec.{} ({} characters) does not match the {} template's \
                     rule {}",
                    rule.name,
                    value.chars().count(),
                    template.template_type,
                    rule.pattern
                ))));
            }
        }
        Ok(Ok(()))
    }

    pub fn all(&self) -> &[TemplateDetail] {
        &self.templates
    }

    pub fn by_id(&self, id: &str) -> Option<&TemplateDetail> {
        self.templates.iter().find(|t| t.id == id)
    }

    pub fn by_type(&self, template_type: &str) -> Option<&TemplateDetail> {
        self.templates
            .iter()
            .find(|t| t.template_type == template_type)
    }

    /// Templates matching the list filters (`id` and `type` exact, `name` substring,
    /// case-insensitive).
    pub fn filter(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        template_type: Option<&str>,
    ) -> Vec<TemplateListItem> {
        let name = name.map(str::to_lowercase);
        self.templates
            .iter()
            .filter(|t| id.is_none_or(|id| t.id == id))
            .filter(|t| template_type.is_none_or(|ty| t.template_type == ty))
            .filter(|t| {
                name.as_ref()
                    .is_none_or(|n| t.name.to_lowercase().contains(n.as_str()))
            })
            .map(|t| TemplateListItem {
                id: t.id.clone(),
                name: t.name.clone(),
                description: t.description.clone(),
                template_type: t.template_type.clone(),
                flavor_type: t.flavor_type.clone(),
                params: t.params.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_load_with_unique_ids_and_types() {
        let catalog = TemplateCatalog::load(None).expect("built-ins parse");
        let mut ids: Vec<_> = catalog.all().iter().map(|t| t.id.clone()).collect();
        let mut types: Vec<_> = catalog
            .all()
            .iter()
            .map(|t| t.template_type.clone())
            .collect();
        ids.sort();
        ids.dedup();
        types.sort();
        types.dedup();
        assert_eq!(ids.len(), BUILTIN.len());
        assert_eq!(types.len(), BUILTIN.len());
        assert!(catalog.by_type("COMMON").is_some());
        assert_eq!(catalog.filter(None, Some("LOG"), None).len(), 2);
    }

    #[test]
    fn item_specs_follow_the_rules_of_the_templates_parameters() {
        let catalog = TemplateCatalog::load(None).expect("built-ins parse");
        let common = catalog.by_type("COMMON").expect("COMMON");
        let spec = |cmd: String| Some(BTreeMap::from([("cmd".to_string(), cmd)]));
        let ok = |cmd: &str| {
            catalog
                .check_spec(common, 0, spec(cmd.to_string()).as_ref())
                .expect("the rule compiles")
        };
        assert!(ok("echo hi").is_ok());
        assert!(ok("echo one\necho two").is_ok(), "a command may span lines");
        assert!(
            ok(&"é".repeat(4096)).is_ok(),
            "4,096 characters, more bytes"
        );
        let long = catalog
            .check_spec(common, 2, spec("x".repeat(4097)).as_ref())
            .expect("the rule compiles");
        let message = long.expect_err("too long").0;
        assert!(message.contains("items[2].spec.cmd"), "{message}");
        assert!(message.contains("^.{1,4096}$"), "{message}");
        assert!(ok("").is_err(), "at least one character");
        // Without a `cmd`, the task would run COMMON's default, the empty command.
        let missing = |spec: Option<&BTreeMap<String, String>>| {
            let answer = catalog
                .check_spec(common, 1, spec)
                .expect("the rule compiles");
            answer.expect_err("cmd is required").0
        };
        let message = missing(None);
        assert!(
            message.contains("items[1].spec.cmd is required"),
            "{message}"
        );
        let other = BTreeMap::from([("other".to_string(), "x".repeat(10_000))]);
        missing(Some(&other));
        let with_other = BTreeMap::from([
            ("cmd".to_string(), "true".to_string()),
            ("other".to_string(), "x".repeat(10_000)),
        ]);
        let unruled = catalog.check_spec(common, 0, Some(&with_other));
        assert!(matches!(unruled, Ok(Ok(()))), "no rule for other");
        // The other built-ins' defaults follow their rules, but for the package to upgrade
        // to: their specs may be left out.
        for t in catalog.all() {
            let answer = catalog.check_spec(t, 0, None).expect("the rules compile");
            let required = ["COMMON", "ASCEND_SOFTWARE_UPGRADE"];
            let kind = t.template_type.as_str();
            assert_eq!(
                answer.is_err(),
                required.contains(&kind),
                "{kind}: {answer:?}"
            );
        }
    }

    /// Length rules are checked by counting; every rule answers as the compiled expression.
    #[test]
    fn length_rules_answer_as_their_regular_expressions() {
        let patterns = [
            ("^.{1,4096}$", true),
            ("^/.{0,1023}$", true),
            ("^ab.{2,3}$", true),
            ("^.{2,}$", true),
            ("^.{1,5}", false),
            ("^[0-9]{1,2}$", false),
            ("^a|.{1,3}$", false),
            ("(?i)^a.{1,3}$", false),
        ];
        let long = "é".repeat(4096);
        let longer = "x".repeat(4097);
        let values = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdef",
            "/",
            "/x",
            "//",
            "x/",
            "é",
            "ab\né",
            "\n",
            "/\n\n",
            "12",
            "123",
            "ab€€€",
            &long,
            &longer,
        ];
        for (pattern, counted) in patterns {
            let rule = ParamRule::new("p", pattern, "").expect("rule");
            assert_eq!(
                matches!(rule.check, Check::Length { .. }),
                counted,
                "{pattern}"
            );
            let regex = RegexBuilder::new(pattern)
                .dot_matches_new_line(true)
                .build()
                .expect("regex");
            for value in values {
                assert_eq!(
                    rule.matches(value).expect("checked"),
                    regex.is_match(value),
                    "{pattern} on {value:?}"
                );
            }
        }
    }

    #[test]
    fn a_template_with_a_bad_regex_does_not_load() {
        let dir = tempfile::tempdir().expect("dir");
        let mut raw: serde_json::Value = serde_json::from_str(BUILTIN[0].1).expect("json");
        raw["type"] = serde_json::json!("BAD_RULE");
        raw["id"] = serde_json::json!("bad-rule");
        raw["params"][0]["regex"] = serde_json::json!("^(unclosed$");
        std::fs::write(dir.path().join("bad.json"), raw.to_string()).expect("write");
        let error = TemplateCatalog::load(Some(dir.path())).expect_err("bad regex");
        assert!(format!("{error:#}").contains("bad regex"), "{error:#}");
    }

    #[test]
    fn a_template_timeout_is_a_number_of_seconds_up_to_a_week() {
        let (_, common) = BUILTIN
            .iter()
            .find(|(name, _)| name.contains("common"))
            .expect("the COMMON template");
        let mut raw: serde_json::Value = serde_json::from_str(common).expect("json");
        for (timeout, ok) in [
            ("1", true),
            ("604800", true),
            ("0", false),
            ("604801", false),
            ("18446744073709551615", false),
            ("1h", false),
            ("", false),
        ] {
            raw["timeout"] = serde_json::json!(timeout);
            assert_eq!(
                parse("test", &raw.to_string()).is_ok(),
                ok,
                "timeout {timeout:?}"
            );
        }
    }
}
