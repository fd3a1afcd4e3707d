//! Client commands `templates …`: list and get job templates, as signed API calls.

use clap::{Args, Subcommand};
use reqwest::Method;

use super::api::{call, print_answer, Answer};
use super::connect::ConnectArgs;
use super::output::{self, OutputArgs, Table};
use crate::sign;
use crate::wire::{Page, TemplateDetail, TemplateListItem};

/// `litejobs templates …`
#[derive(Debug, Args)]
pub struct TemplatesArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    pub command: TemplatesCommand,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List the job templates.
    List {
        /// Only the template with this id.
        #[arg(long)]
        id: Option<String>,
        /// Templates whose name matches this.
        #[arg(long)]
        name: Option<String>,
        /// Templates of this type.
        #[arg(long = "type", value_name = "TYPE")]
        template_type: Option<String>,
    },
    /// Show one template with its parameters.
    Get {
        /// Template id.
        id: String,
    },
}

fn template_list_table(page: &Page<TemplateListItem>) -> String {
    let mut table = Table::new(["ID", "NAME", "TYPE", "FLAVOR", "DESCRIPTION"]);
    for t in &page.data {
        table.row([
            t.id.clone(),
            t.name.clone(),
            t.template_type.clone(),
            t.flavor_type.clone(),
            output::truncate(&t.description, 60),
        ]);
    }
    if table.is_empty() {
        "no templates\n".to_string()
    } else {
        table.render()
    }
}

fn template_detail_table(t: &TemplateDetail) -> String {
    let mut out = output::fields(&[
        ("ID", t.id.clone()),
        ("Name", t.name.clone()),
        ("Type", t.template_type.clone()),
        ("Status", t.status.clone()),
        ("Flavor", t.flavor_type.clone()),
        ("Description", output::or_dash(Some(&t.description))),
        ("Command", output::or_dash(Some(&t.cmd))),
        ("Image", output::or_dash(Some(&t.swr_path))),
        ("Resources", output::or_dash(Some(&t.resources))),
        ("Volumes", output::or_dash(Some(&t.volumes))),
        ("Mounts", output::or_dash(Some(&t.volumes_mount))),
        ("Timeout", output::or_dash(Some(&t.timeout))),
        ("Check every", output::or_dash(Some(&t.check_interval))),
    ]);
    let mut params = Table::new(["PARAM", "VALUE", "VISIBLE", "REGEX", "DESCRIPTION"]);
    for p in &t.params {
        params.row([
            p.name.clone(),
            p.value.clone(),
            p.visible.clone(),
            p.regex.clone(),
            output::truncate(&p.description, 60),
        ]);
    }
    if !params.is_empty() {
        out.push('\n');
        out.push_str(&params.render());
    }
    out
}

/// Runs a `templates` command.
pub async fn run_templates(args: TemplatesArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?;
    let format = args.output.output;
    match args.command {
        TemplatesCommand::List {
            id,
            name,
            template_type,
        } => {
            let query: Vec<(&str, String)> = [("id", id), ("name", name), ("type", template_type)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            let answer: Answer<Page<TemplateListItem>> = call(
                &client,
                Method::GET,
                "/dev-servers/jobs/templates",
                &query,
                None,
                &[],
            )
            .await?;
            print_answer(format, &answer, template_list_table)?;
        }
        TemplatesCommand::Get { id } => {
            let path = format!(
                "/dev-servers/jobs/templates/{}",
                sign::encode(id.as_bytes())
            );
            let answer: Answer<TemplateDetail> =
                call(&client, Method::GET, &path, &[], None, &[]).await?;
            print_answer(format, &answer, template_detail_table)?;
        }
    }
    Ok(())
}
