//! Job templates: the built-in ones shipped as data files in `templates/`, plus any an
//! operator adds from a directory. A job's `type` names its template.

use std::path::Path;

use anyhow::Context;

use crate::domain::ids::is_simple_name;
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

/// Every template the service offers, in a stable order.
#[derive(Debug, Clone)]
pub struct TemplateCatalog {
    templates: Vec<TemplateDetail>,
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
        Ok(Self { templates })
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
