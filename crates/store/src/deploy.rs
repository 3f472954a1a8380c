//! CodeDeploy's tables: applications, revisions, deployment configs and groups, on-premises
//! instances, deployments (the orchestrator's state as JSON) and the host command queue.
//! Documents are passed as JSON text; the service owns their shapes.

use crate::{Conn, StoreError};
use sqlx::Row;

type Result<T> = std::result::Result<T, StoreError>;

fn inserted(r: std::result::Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>) -> Result<bool> {
    match r {
        Ok(r) => Ok(r.rows_affected() > 0),
        Err(e) if crate::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

// ----- applications -----

#[derive(Debug, Clone)]
pub struct AppRow {
    pub name: String,
    pub application_id: String,
    pub compute_platform: String,
    pub created: f64,
}

/// Inserts an application; false if the name is taken in the region.
pub async fn insert_app(conn: &mut Conn, region: &str, app: &AppRow) -> Result<bool> {
    inserted(
        sqlx::query("INSERT INTO cd_applications (region, name, application_id, compute_platform, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(region)
            .bind(&app.name)
            .bind(&app.application_id)
            .bind(&app.compute_platform)
            .bind(app.created)
            .execute(&mut *conn)
            .await,
    )
}

pub async fn get_app(conn: &mut Conn, region: &str, name: &str) -> Result<Option<AppRow>> {
    let r = sqlx::query("SELECT name, application_id, compute_platform, created_at FROM cd_applications WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(r.map(|r| AppRow {
        name: r.get(0),
        application_id: r.get(1),
        compute_platform: r.get(2),
        created: r.get(3),
    }))
}

/// The region's application names, sorted.
pub async fn list_apps(conn: &mut Conn, region: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT name FROM cd_applications WHERE region = $1 ORDER BY name")
        .bind(region)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes an application with its revisions and groups; false if there was none.
pub async fn delete_app(conn: &mut Conn, region: &str, name: &str) -> Result<bool> {
    let n = sqlx::query("DELETE FROM cd_applications WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Renames an application (its revisions, groups and deployments follow); false if the new
/// name is taken.
pub async fn rename_app(conn: &mut Conn, region: &str, old: &str, new: &str) -> Result<bool> {
    let ok = inserted(
        sqlx::query("UPDATE cd_applications SET name = $3 WHERE region = $1 AND name = $2")
            .bind(region)
            .bind(old)
            .bind(new)
            .execute(&mut *conn)
            .await,
    )?;
    if ok {
        sqlx::query(
            "UPDATE cd_deployments SET application = $3 WHERE region = $1 AND application = $2",
        )
        .bind(region)
        .bind(old)
        .bind(new)
        .execute(&mut *conn)
        .await?;
    }
    Ok(ok)
}

// ----- revisions -----

#[derive(Debug, Clone)]
pub struct RevisionRow {
    pub key: String,
    pub description: Option<String>,
    pub registered: f64,
    pub first_used: Option<f64>,
    pub last_used: Option<f64>,
    pub groups: String,
}

/// Registers a revision (a revision registered again keeps its times and gets the new
/// description).
pub async fn register_revision(
    conn: &mut Conn,
    region: &str,
    app: &str,
    key: &str,
    description: Option<&str>,
    t: f64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cd_revisions (region, application, revision_key, description, registered_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (region, application, revision_key) DO UPDATE SET description = COALESCE(excluded.description, cd_revisions.description)",
    )
    .bind(region)
    .bind(app)
    .bind(key)
    .bind(description)
    .bind(t)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records that a revision was deployed to `groups` (JSON list) at `t`.
pub async fn revision_used(
    conn: &mut Conn,
    region: &str,
    app: &str,
    key: &str,
    groups: &str,
    t: f64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cd_revisions (region, application, revision_key, registered_at, first_used_at, last_used_at, groups) VALUES ($1, $2, $3, $4, $4, $4, $5)
         ON CONFLICT (region, application, revision_key) DO UPDATE SET first_used_at = COALESCE(cd_revisions.first_used_at, excluded.first_used_at), last_used_at = excluded.last_used_at, groups = excluded.groups",
    )
    .bind(region)
    .bind(app)
    .bind(key)
    .bind(t)
    .bind(groups)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const REVISION_COLUMNS: &str =
    "revision_key, description, registered_at, first_used_at, last_used_at, groups";

fn revision_from(r: &sqlx::sqlite::SqliteRow) -> RevisionRow {
    RevisionRow {
        key: r.get(0),
        description: r.get(1),
        registered: r.get(2),
        first_used: r.get(3),
        last_used: r.get(4),
        groups: r.get(5),
    }
}

pub async fn get_revision(
    conn: &mut Conn,
    region: &str,
    app: &str,
    key: &str,
) -> Result<Option<RevisionRow>> {
    let r = sqlx::query(&format!("SELECT {REVISION_COLUMNS} FROM cd_revisions WHERE region = $1 AND application = $2 AND revision_key = $3"))
        .bind(region)
        .bind(app)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(r.as_ref().map(revision_from))
}

/// An application's revisions in registration order.
pub async fn list_revisions(conn: &mut Conn, region: &str, app: &str) -> Result<Vec<RevisionRow>> {
    let rows = sqlx::query(&format!("SELECT {REVISION_COLUMNS} FROM cd_revisions WHERE region = $1 AND application = $2 ORDER BY registered_at, revision_key"))
        .bind(region)
        .bind(app)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(revision_from).collect())
}

// ----- deployment configs -----

/// Inserts a custom deployment config; false if the name is taken.
pub async fn insert_config(
    conn: &mut Conn,
    region: &str,
    name: &str,
    doc: &str,
    t: f64,
) -> Result<bool> {
    inserted(
        sqlx::query("INSERT INTO cd_deployment_configs (region, name, doc, created_at) VALUES ($1, $2, $3, $4)")
            .bind(region)
            .bind(name)
            .bind(doc)
            .bind(t)
            .execute(&mut *conn)
            .await,
    )
}

/// A custom deployment config's document.
pub async fn get_config(conn: &mut Conn, region: &str, name: &str) -> Result<Option<String>> {
    let r = sqlx::query("SELECT doc FROM cd_deployment_configs WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(r.map(|r| r.get(0)))
}

pub async fn list_configs(conn: &mut Conn, region: &str) -> Result<Vec<String>> {
    let rows =
        sqlx::query("SELECT name FROM cd_deployment_configs WHERE region = $1 ORDER BY name")
            .bind(region)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn delete_config(conn: &mut Conn, region: &str, name: &str) -> Result<bool> {
    let n = sqlx::query("DELETE FROM cd_deployment_configs WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

// ----- deployment groups -----

#[derive(Debug, Clone)]
pub struct GroupRow {
    pub application: String,
    pub name: String,
    pub group_id: String,
    pub doc: String,
}

/// Inserts a deployment group; false if the name is taken in the application.
pub async fn insert_group(conn: &mut Conn, region: &str, g: &GroupRow, t: f64) -> Result<bool> {
    inserted(
        sqlx::query("INSERT INTO cd_deployment_groups (region, application, name, group_id, doc, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(region)
            .bind(&g.application)
            .bind(&g.name)
            .bind(&g.group_id)
            .bind(&g.doc)
            .bind(t)
            .execute(&mut *conn)
            .await,
    )
}

const GROUP_COLUMNS: &str = "application, name, group_id, doc";

fn group_from(r: &sqlx::sqlite::SqliteRow) -> GroupRow {
    GroupRow {
        application: r.get(0),
        name: r.get(1),
        group_id: r.get(2),
        doc: r.get(3),
    }
}

pub async fn get_group(
    conn: &mut Conn,
    region: &str,
    app: &str,
    name: &str,
) -> Result<Option<GroupRow>> {
    let r = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM cd_deployment_groups WHERE region = $1 AND application = $2 AND name = $3"))
        .bind(region)
        .bind(app)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(r.as_ref().map(group_from))
}

/// An application's deployment groups, by name.
pub async fn list_groups(conn: &mut Conn, region: &str, app: &str) -> Result<Vec<GroupRow>> {
    let rows = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM cd_deployment_groups WHERE region = $1 AND application = $2 ORDER BY name"))
        .bind(region)
        .bind(app)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(group_from).collect())
}

/// Every deployment group of the region (for configs in use).
pub async fn all_groups(conn: &mut Conn, region: &str) -> Result<Vec<GroupRow>> {
    let rows = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM cd_deployment_groups WHERE region = $1 ORDER BY application, name"))
        .bind(region)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(group_from).collect())
}

/// Writes a group's document, renaming it to `new_name`; false if that name is taken.
pub async fn update_group(
    conn: &mut Conn,
    region: &str,
    app: &str,
    name: &str,
    new_name: &str,
    doc: &str,
) -> Result<bool> {
    let ok = inserted(
        sqlx::query("UPDATE cd_deployment_groups SET name = $4, doc = $5 WHERE region = $1 AND application = $2 AND name = $3")
            .bind(region)
            .bind(app)
            .bind(name)
            .bind(new_name)
            .bind(doc)
            .execute(&mut *conn)
            .await,
    )?;
    if ok && name != new_name {
        sqlx::query("UPDATE cd_deployments SET group_name = $4 WHERE region = $1 AND application = $2 AND group_name = $3")
            .bind(region)
            .bind(app)
            .bind(name)
            .bind(new_name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(ok)
}

pub async fn delete_group(conn: &mut Conn, region: &str, app: &str, name: &str) -> Result<bool> {
    let n = sqlx::query(
        "DELETE FROM cd_deployment_groups WHERE region = $1 AND application = $2 AND name = $3",
    )
    .bind(region)
    .bind(app)
    .bind(name)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

// ----- on-premises instances -----

#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub name: String,
    pub iam_arn: String,
    pub registered: bool,
    pub doc: String,
}

const INSTANCE_COLUMNS: &str = "name, iam_arn, registered, doc";

fn instance_from(r: &sqlx::sqlite::SqliteRow) -> InstanceRow {
    InstanceRow {
        name: r.get(0),
        iam_arn: r.get(1),
        registered: r.get::<i64, _>(2) != 0,
        doc: r.get(3),
    }
}

/// Writes an instance (inserted, or replaced when it was deregistered).
pub async fn put_instance(conn: &mut Conn, region: &str, i: &InstanceRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO cd_instances (region, name, iam_arn, registered, doc) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (region, name) DO UPDATE SET iam_arn = excluded.iam_arn, registered = excluded.registered, doc = excluded.doc",
    )
    .bind(region)
    .bind(&i.name)
    .bind(&i.iam_arn)
    .bind(i.registered as i64)
    .bind(&i.doc)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get_instance(
    conn: &mut Conn,
    region: &str,
    name: &str,
) -> Result<Option<InstanceRow>> {
    let r = sqlx::query(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM cd_instances WHERE region = $1 AND name = $2"
    ))
    .bind(region)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.as_ref().map(instance_from))
}

/// The region's instances, by name.
pub async fn list_instances(conn: &mut Conn, region: &str) -> Result<Vec<InstanceRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM cd_instances WHERE region = $1 ORDER BY name"
    ))
    .bind(region)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(instance_from).collect())
}

/// The registered instances (region, name) an IAM identity is the agent of.
pub async fn instances_of(conn: &mut Conn, iam_arn: &str) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT region, name FROM cd_instances WHERE iam_arn = $1 AND registered = 1 ORDER BY region, name")
        .bind(iam_arn)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

// ----- deployments -----

#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub deployment_id: String,
    pub region: String,
    pub application: String,
    pub group_name: String,
    pub status: String,
    /// 1 running, 2 waiting to deregister its original hosts, 0 done.
    pub active: i64,
    pub state: String,
    pub created: f64,
    /// Who outside CodeDeploy asked for it (a pipeline's action execution).
    pub external_id: Option<String>,
}

const DEPLOYMENT_COLUMNS: &str =
    "deployment_id, region, application, group_name, status, active, state, created_at, external_id";

fn deployment_from(r: &sqlx::sqlite::SqliteRow) -> DeploymentRow {
    DeploymentRow {
        deployment_id: r.get(0),
        region: r.get(1),
        application: r.get(2),
        group_name: r.get(3),
        status: r.get(4),
        active: r.get(5),
        state: r.get(6),
        created: r.get(7),
        external_id: r.get(8),
    }
}

pub async fn insert_deployment(conn: &mut Conn, d: &DeploymentRow) -> Result<()> {
    sqlx::query("INSERT INTO cd_deployments (deployment_id, region, application, group_name, status, active, state, created_at, updated_at, external_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)")
        .bind(&d.deployment_id)
        .bind(&d.region)
        .bind(&d.application)
        .bind(&d.group_name)
        .bind(&d.status)
        .bind(d.active)
        .bind(&d.state)
        .bind(d.created)
        .bind(&d.external_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The deployment made for `external_id`, if any.
pub async fn by_external_id(
    conn: &mut Conn,
    region: &str,
    external_id: &str,
) -> Result<Option<String>> {
    let r = sqlx::query(
        "SELECT deployment_id FROM cd_deployments WHERE region = $1 AND external_id = $2",
    )
    .bind(region)
    .bind(external_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.map(|r| r.get(0)))
}

pub async fn get_deployment(conn: &mut Conn, id: &str) -> Result<Option<DeploymentRow>> {
    let r = sqlx::query(&format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM cd_deployments WHERE deployment_id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.as_ref().map(deployment_from))
}

/// Stores a deployment's new state.
pub async fn update_deployment(
    conn: &mut Conn,
    id: &str,
    status: &str,
    active: i64,
    state: &str,
    t: f64,
) -> Result<()> {
    sqlx::query("UPDATE cd_deployments SET status = $2, active = $3, state = $4, updated_at = $5 WHERE deployment_id = $1")
        .bind(id)
        .bind(status)
        .bind(active)
        .bind(state)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The region's deployments (of an application, of a group), newest first: (id, status,
/// created).
pub async fn list_deployments(
    conn: &mut Conn,
    region: &str,
    app: Option<&str>,
    group: Option<&str>,
) -> Result<Vec<(String, String, f64)>> {
    let rows = sqlx::query(
        "SELECT deployment_id, status, created_at FROM cd_deployments WHERE region = $1 AND ($2 IS NULL OR application = $2) AND ($3 IS NULL OR group_name = $3) ORDER BY created_at DESC, deployment_id DESC",
    )
    .bind(region)
    .bind(app)
    .bind(group)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// The deployments still running, or succeeded and waiting to deregister their original
/// hosts (any region).
pub async fn active_deployments(conn: &mut Conn) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT deployment_id FROM cd_deployments WHERE active IN (1, 2) ORDER BY created_at",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The running deployment of a group, if any.
pub async fn active_in_group(
    conn: &mut Conn,
    region: &str,
    app: &str,
    group: &str,
) -> Result<Option<String>> {
    let r = sqlx::query("SELECT deployment_id FROM cd_deployments WHERE region = $1 AND application = $2 AND group_name = $3 AND active = 1")
        .bind(region)
        .bind(app)
        .bind(group)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(r.map(|r| r.get(0)))
}

// ----- host commands -----

#[derive(Debug, Clone)]
pub struct CommandRow {
    pub command_id: String,
    pub deployment_id: String,
    pub region: String,
    pub instance: String,
    pub host: String,
    pub lifecycle_event: String,
    pub status: String,
    pub nonce: i64,
    pub created: f64,
    pub updated: f64,
}

const COMMAND_COLUMNS: &str = "command_id, deployment_id, region, instance, host, lifecycle_event, status, nonce, created_at, updated_at";

fn command_from(r: &sqlx::sqlite::SqliteRow) -> CommandRow {
    CommandRow {
        command_id: r.get(0),
        deployment_id: r.get(1),
        region: r.get(2),
        instance: r.get(3),
        host: r.get(4),
        lifecycle_event: r.get(5),
        status: r.get(6),
        nonce: r.get(7),
        created: r.get(8),
        updated: r.get(9),
    }
}

pub async fn insert_command(conn: &mut Conn, c: &CommandRow) -> Result<()> {
    sqlx::query(&format!("INSERT INTO cd_host_commands ({COMMAND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
        .bind(&c.command_id)
        .bind(&c.deployment_id)
        .bind(&c.region)
        .bind(&c.instance)
        .bind(&c.host)
        .bind(&c.lifecycle_event)
        .bind(&c.status)
        .bind(c.nonce)
        .bind(c.created)
        .bind(c.updated)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The oldest command waiting for a host, marked `Dispatched`.
pub async fn take_command(conn: &mut Conn, host: &str, t: f64) -> Result<Option<CommandRow>> {
    let r = sqlx::query(&format!("SELECT {COMMAND_COLUMNS} FROM cd_host_commands WHERE host = $1 AND status = 'Pending' ORDER BY created_at, command_id LIMIT 1"))
        .bind(host)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(mut c) = r.as_ref().map(command_from) else {
        return Ok(None);
    };
    set_command(conn, &c.command_id, "Dispatched", t).await?;
    c.status = "Dispatched".into();
    c.updated = t;
    Ok(Some(c))
}

pub async fn get_command(conn: &mut Conn, id: &str) -> Result<Option<CommandRow>> {
    let r = sqlx::query(&format!(
        "SELECT {COMMAND_COLUMNS} FROM cd_host_commands WHERE command_id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.as_ref().map(command_from))
}

/// Sets a command's status (its last contact is `t`).
pub async fn set_command(conn: &mut Conn, id: &str, status: &str, t: f64) -> Result<()> {
    sqlx::query("UPDATE cd_host_commands SET status = $2, updated_at = $3 WHERE command_id = $1")
        .bind(id)
        .bind(status)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Commands not finished (Pending, Dispatched, InProgress, Live), oldest contact first.
pub async fn open_commands(conn: &mut Conn) -> Result<Vec<CommandRow>> {
    let rows = sqlx::query(&format!("SELECT {COMMAND_COLUMNS} FROM cd_host_commands WHERE status IN ('Pending', 'Dispatched', 'InProgress', 'Live') ORDER BY updated_at"))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(command_from).collect())
}

// ----- traffic -----

/// The instances a target group sends traffic to, if it has been set.
pub async fn get_traffic(conn: &mut Conn, region: &str, group: &str) -> Result<Option<String>> {
    let r = sqlx::query("SELECT instances FROM cd_traffic WHERE region = $1 AND target_group = $2")
        .bind(region)
        .bind(group)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(r.map(|r| r.get(0)))
}

pub async fn set_traffic(
    conn: &mut Conn,
    region: &str,
    group: &str,
    instances: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cd_traffic (region, target_group, instances) VALUES ($1, $2, $3)
         ON CONFLICT (region, target_group) DO UPDATE SET instances = excluded.instances",
    )
    .bind(region)
    .bind(group)
    .bind(instances)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Puts commands taken but not finished by `host` back in its queue (the service's own
/// traffic events after a restart: performing one again is harmless).
pub async fn requeue(conn: &mut Conn, host: &str) -> Result<()> {
    sqlx::query("UPDATE cd_host_commands SET status = 'Pending' WHERE host = $1 AND status IN ('Dispatched', 'InProgress', 'Live')")
        .bind(host)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
