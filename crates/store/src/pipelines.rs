//! CodePipeline's tables: pipelines and their versions, executions (the engine's state as
//! JSON), action runs (the durable queue of effects), custom action types and their jobs,
//! webhooks. Documents are passed as JSON text; the service owns their shapes.

use crate::{Conn, StoreError};
use sqlx::Row;

type Result<T> = std::result::Result<T, StoreError>;

/// `$start, $start+1, …` for `n` values (`NULL` for none, which matches nothing).
fn placeholders(start: usize, n: usize) -> String {
    if n == 0 {
        return "NULL".into();
    }
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ----- pipelines -----

/// A stored pipeline (its current version).
#[derive(Debug, Clone)]
pub struct PipelineRow {
    pub name: String,
    pub version: i64,
    pub declaration: String,
    pub created: f64,
    pub updated: f64,
    /// JSON `{stage: {reason, by, at}}` of disabled inbound transitions.
    pub transitions: String,
    /// JSON `{stage: execution id}`: the execution that entered each stage last.
    pub latest: String,
    pub principal: String,
    /// The outbox sequence number at creation: only later events trigger the pipeline.
    pub events_after: i64,
}

const PIPELINE_COLUMNS: &str =
    "name, version, declaration, created_at, updated_at, transitions, latest, principal, events_after";

fn pipeline_from(r: &sqlx::sqlite::SqliteRow) -> PipelineRow {
    PipelineRow {
        name: r.get(0),
        version: r.get(1),
        declaration: r.get(2),
        created: r.get(3),
        updated: r.get(4),
        transitions: r.get(5),
        latest: r.get(6),
        principal: r.get(7),
        events_after: r.get(8),
    }
}

/// Inserts a new pipeline at version 1; false if the name is taken.
pub async fn insert_pipeline(
    conn: &mut Conn,
    region: &str,
    name: &str,
    declaration: &str,
    t: f64,
    principal: &str,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO cp_pipelines (region, name, version, declaration, created_at, updated_at, principal, events_after) VALUES ($1, $2, 1, $3, $4, $4, $5, (SELECT COALESCE(MAX(seq), 0) FROM event_outbox)) ON CONFLICT DO NOTHING",
    )
    .bind(region)
    .bind(name)
    .bind(declaration)
    .bind(t)
    .bind(principal)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    insert_version(conn, region, name, 1, declaration, t).await?;
    Ok(true)
}

async fn insert_version(
    conn: &mut Conn,
    region: &str,
    name: &str,
    version: i64,
    declaration: &str,
    t: f64,
) -> Result<()> {
    sqlx::query("INSERT INTO cp_pipeline_versions (region, name, version, declaration, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(region)
        .bind(name)
        .bind(version)
        .bind(declaration)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Stores version `version` of a pipeline as its current one.
pub async fn update_pipeline(
    conn: &mut Conn,
    region: &str,
    name: &str,
    version: i64,
    declaration: &str,
    t: f64,
    principal: &str,
) -> Result<()> {
    sqlx::query("UPDATE cp_pipelines SET version = $3, declaration = $4, updated_at = $5, principal = $6 WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .bind(version)
        .bind(declaration)
        .bind(t)
        .bind(principal)
        .execute(&mut *conn)
        .await?;
    insert_version(conn, region, name, version, declaration, t).await
}

pub async fn pipeline(conn: &mut Conn, region: &str, name: &str) -> Result<Option<PipelineRow>> {
    let row = sqlx::query(&format!(
        "SELECT {PIPELINE_COLUMNS} FROM cp_pipelines WHERE region = $1 AND name = $2"
    ))
    .bind(region)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(pipeline_from))
}

/// Every pipeline of a region, by name.
pub async fn pipelines(conn: &mut Conn, region: &str) -> Result<Vec<PipelineRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {PIPELINE_COLUMNS} FROM cp_pipelines WHERE region = $1 ORDER BY name"
    ))
    .bind(region)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(pipeline_from).collect())
}

/// The declaration of one version of a pipeline.
pub async fn pipeline_version(
    conn: &mut Conn,
    region: &str,
    name: &str,
    version: i64,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT declaration FROM cp_pipeline_versions WHERE region = $1 AND name = $2 AND version = $3",
    )
    .bind(region)
    .bind(name)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Deletes a pipeline with its versions, executions and action runs; the jobs of the runs
/// that were not done (for the caller to cancel).
pub async fn delete_pipeline(conn: &mut Conn, region: &str, name: &str) -> Result<Vec<String>> {
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT job FROM cp_action_runs WHERE region = $1 AND pipeline = $2 AND status <> 'done'",
    )
    .bind(region)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM cp_action_runs WHERE region = $1 AND pipeline = $2")
        .bind(region)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM cp_pipelines WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(open)
}

pub async fn set_transitions(conn: &mut Conn, region: &str, name: &str, json: &str) -> Result<()> {
    sqlx::query("UPDATE cp_pipelines SET transitions = $3 WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .bind(json)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn set_latest(conn: &mut Conn, region: &str, name: &str, json: &str) -> Result<()> {
    sqlx::query("UPDATE cp_pipelines SET latest = $3 WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .bind(json)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ----- executions -----

/// An execution's stored documents: the engine's state and the service's metadata.
#[derive(Debug, Clone)]
pub struct ExecutionRow {
    pub state: String,
    pub meta: String,
}

/// Which executions of a pipeline to load.
#[derive(Debug, Clone, Copy)]
pub enum Executions<'a> {
    /// The active ones and these (oldest first).
    ActiveAnd(&'a [&'a str]),
    /// All of them, newest first.
    All,
    /// One.
    One(&'a str),
    /// The `limit` newest finished ones other than `except`, newest first.
    FinishedExcept { except: &'a str, limit: i64 },
}

pub async fn executions(
    conn: &mut Conn,
    region: &str,
    pipeline: &str,
    which: Executions<'_>,
) -> Result<Vec<ExecutionRow>> {
    let base = "SELECT state, meta FROM cp_executions WHERE region = $1 AND pipeline = $2";
    let mut binds: Vec<&str> = Vec::new();
    let mut limit = None;
    let sql = match which {
        Executions::ActiveAnd(ids) => {
            binds.extend(ids.iter().copied());
            format!(
                "{base} AND (active = 1 OR execution_id IN ({})) ORDER BY seq",
                placeholders(3, ids.len())
            )
        }
        Executions::All => format!("{base} ORDER BY seq DESC"),
        Executions::One(id) => {
            binds.push(id);
            format!("{base} AND execution_id = $3")
        }
        Executions::FinishedExcept { except, limit: n } => {
            binds.push(except);
            limit = Some(n);
            format!("{base} AND execution_id <> $3 AND active = 0 ORDER BY seq DESC LIMIT $4")
        }
    };
    let mut q = sqlx::query(&sql).bind(region).bind(pipeline);
    for b in binds {
        q = q.bind(b);
    }
    if let Some(n) = limit {
        q = q.bind(n);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    Ok(rows
        .iter()
        .map(|r| ExecutionRow {
            state: r.get(0),
            meta: r.get(1),
        })
        .collect())
}

/// The execution a client token started, if any.
pub async fn execution_by_token(
    conn: &mut Conn,
    region: &str,
    pipeline: &str,
    token: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT execution_id FROM cp_executions WHERE region = $1 AND pipeline = $2 AND client_token = $3",
    )
    .bind(region)
    .bind(pipeline)
    .bind(token)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The next execution's sequence number in a pipeline.
pub async fn next_seq(conn: &mut Conn, region: &str, pipeline: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM cp_executions WHERE region = $1 AND pipeline = $2",
    )
    .bind(region)
    .bind(pipeline)
    .fetch_one(&mut *conn)
    .await?)
}

/// A new execution to store (in progress).
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: &'a str,
    pub region: &'a str,
    pub pipeline: &'a str,
    pub seq: i64,
    pub state: &'a str,
    pub meta: &'a str,
    pub client_token: Option<&'a str>,
    pub started: f64,
}

pub async fn insert_execution(conn: &mut Conn, e: &NewExecution<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO cp_executions (execution_id, region, pipeline, seq, status, active, state, meta, client_token, started_at, updated_at) VALUES ($1, $2, $3, $4, 'InProgress', 1, $5, $6, $7, $8, $8)",
    )
    .bind(e.id)
    .bind(e.region)
    .bind(e.pipeline)
    .bind(e.seq)
    .bind(e.state)
    .bind(e.meta)
    .bind(e.client_token)
    .bind(e.started)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores an execution's new state (and its status, whether it is active).
pub async fn update_execution(
    conn: &mut Conn,
    id: &str,
    state: &str,
    status: &str,
    active: bool,
    t: f64,
) -> Result<()> {
    sqlx::query("UPDATE cp_executions SET state = $2, status = $3, active = $4, updated_at = $5 WHERE execution_id = $1")
        .bind(id)
        .bind(state)
        .bind(status)
        .bind(active as i64)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn execution_meta(conn: &mut Conn, id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT meta FROM cp_executions WHERE execution_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

pub async fn set_execution_meta(conn: &mut Conn, id: &str, meta: &str) -> Result<()> {
    sqlx::query("UPDATE cp_executions SET meta = $2 WHERE execution_id = $1")
        .bind(id)
        .bind(meta)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ----- action runs -----

/// One action run: `status` is queued, starting, running, abandon or done.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub execution: String,
    pub stage: String,
    pub action: String,
    pub status: String,
    /// The run's job (JSON).
    pub job: String,
    pub external: Option<String>,
    /// What the API shows of it (JSON).
    pub detail: String,
    pub started: f64,
    pub updated: f64,
}

const RUN_COLUMNS: &str = "action_execution_id, execution_id, stage, action, status, job, external_id, detail, started_at, updated_at";

fn run_from(r: &sqlx::sqlite::SqliteRow) -> RunRow {
    RunRow {
        id: r.get(0),
        execution: r.get(1),
        stage: r.get(2),
        action: r.get(3),
        status: r.get(4),
        job: r.get(5),
        external: r.get(6),
        detail: r.get(7),
        started: r.get(8),
        updated: r.get(9),
    }
}

/// Which action runs of a region to load.
#[derive(Debug, Clone, Copy)]
pub enum Runs<'a> {
    Pipeline(&'a str),
    Execution {
        pipeline: &'a str,
        execution: &'a str,
    },
    /// One run of a pipeline.
    One {
        pipeline: &'a str,
        id: &'a str,
    },
    Ids(&'a [&'a str]),
    /// The run of an approval action with its token.
    Approval {
        pipeline: &'a str,
        stage: &'a str,
        action: &'a str,
        token: &'a str,
    },
}

pub async fn runs(conn: &mut Conn, region: &str, which: Runs<'_>) -> Result<Vec<RunRow>> {
    let (clause, binds): (String, Vec<&str>) = match which {
        Runs::Pipeline(p) => ("pipeline = $2".into(), vec![p]),
        Runs::Execution {
            pipeline,
            execution,
        } => (
            "pipeline = $2 AND execution_id = $3".into(),
            vec![pipeline, execution],
        ),
        Runs::One { pipeline, id } => (
            "pipeline = $2 AND action_execution_id = $3".into(),
            vec![pipeline, id],
        ),
        Runs::Ids(ids) => (
            format!("action_execution_id IN ({})", placeholders(2, ids.len())),
            ids.to_vec(),
        ),
        Runs::Approval {
            pipeline,
            stage,
            action,
            token,
        } => (
            "pipeline = $2 AND stage = $3 AND action = $4 AND external_id = $5".into(),
            vec![pipeline, stage, action, token],
        ),
    };
    let sql = format!("SELECT {RUN_COLUMNS} FROM cp_action_runs WHERE region = $1 AND {clause}");
    let mut q = sqlx::query(&sql).bind(region);
    for b in binds {
        q = q.bind(b);
    }
    Ok(q.fetch_all(&mut *conn)
        .await?
        .iter()
        .map(run_from)
        .collect())
}

/// A run decided on, to queue.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub id: &'a str,
    pub execution: &'a str,
    pub region: &'a str,
    pub pipeline: &'a str,
    pub stage: &'a str,
    pub action: &'a str,
    pub job: &'a str,
    pub detail: &'a str,
    pub t: f64,
}

pub async fn insert_run(conn: &mut Conn, r: &NewRun<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO cp_action_runs (action_execution_id, execution_id, region, pipeline, stage, action, status, job, detail, started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $9)",
    )
    .bind(r.id)
    .bind(r.execution)
    .bind(r.region)
    .bind(r.pipeline)
    .bind(r.stage)
    .bind(r.action)
    .bind(r.job)
    .bind(r.detail)
    .bind(r.t)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A run no longer wanted: one out of our hands (starting, running) is left for the loop
/// to cancel (`abandon`); any other is done.
pub async fn abandon_run(conn: &mut Conn, id: &str, detail: &str, t: f64) -> Result<()> {
    sqlx::query("UPDATE cp_action_runs SET status = CASE status WHEN 'running' THEN 'abandon' WHEN 'starting' THEN 'abandon' ELSE 'done' END, detail = $2, updated_at = $3 WHERE action_execution_id = $1 AND status <> 'done'")
        .bind(id)
        .bind(detail)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn run_detail(conn: &mut Conn, id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT detail FROM cp_action_runs WHERE action_execution_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The external id of a run (None: no such run; Some(None): none yet).
pub async fn run_external(conn: &mut Conn, id: &str) -> Result<Option<Option<String>>> {
    Ok(
        sqlx::query_scalar("SELECT external_id FROM cp_action_runs WHERE action_execution_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// Marks a run not yet done as done with its final detail; whether it was not done.
pub async fn finish_run(conn: &mut Conn, id: &str, detail: &str, t: f64) -> Result<bool> {
    let n = sqlx::query("UPDATE cp_action_runs SET status = 'done', detail = $2, updated_at = $3 WHERE action_execution_id = $1 AND status IN ('queued', 'starting', 'running')")
        .bind(id)
        .bind(detail)
        .bind(t)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Marks a run done (after cancelling it).
pub async fn run_done(conn: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("UPDATE cp_action_runs SET status = 'done' WHERE action_execution_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Claims a queued run (or one interrupted while starting) to start it; false if it is
/// no longer there to start.
pub async fn claim_run(conn: &mut Conn, id: &str, t: f64) -> Result<bool> {
    let n = sqlx::query("UPDATE cp_action_runs SET status = 'starting', updated_at = $2 WHERE action_execution_id = $1 AND status IN ('queued', 'starting')")
        .bind(id)
        .bind(t)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Records a run as running elsewhere (`external`); false if it was no longer starting or
/// running.
pub async fn set_running(
    conn: &mut Conn,
    id: &str,
    external: &str,
    detail: &str,
    t: f64,
) -> Result<bool> {
    let n = sqlx::query("UPDATE cp_action_runs SET status = 'running', external_id = $2, updated_at = $3, detail = $4 WHERE action_execution_id = $1 AND status IN ('starting', 'running')")
        .bind(id)
        .bind(external)
        .bind(t)
        .bind(detail)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// A run the loop has work for.
#[derive(Debug, Clone)]
pub struct OpenRun {
    pub id: String,
    pub status: String,
    pub job: String,
    pub external: Option<String>,
    pub updated: f64,
}

/// Every run of every region that is not done.
pub async fn open_runs(conn: &mut Conn) -> Result<Vec<OpenRun>> {
    let rows = sqlx::query(
        "SELECT action_execution_id, status, job, external_id, updated_at FROM cp_action_runs WHERE status IN ('queued', 'starting', 'running', 'abandon')",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| OpenRun {
            id: r.get(0),
            status: r.get(1),
            job: r.get(2),
            external: r.get(3),
            updated: r.get(4),
        })
        .collect())
}

// ----- custom action types and their jobs -----

/// Adds a custom action type; false if it exists.
pub async fn insert_action_type(
    conn: &mut Conn,
    region: &str,
    (category, provider, version): (&str, &str, &str),
    definition: &str,
    t: f64,
) -> Result<bool> {
    let n = sqlx::query("INSERT INTO cp_action_types (region, category, provider, version, definition, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
        .bind(region)
        .bind(category)
        .bind(provider)
        .bind(version)
        .bind(definition)
        .bind(t)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Deletes a custom action type; whether it existed.
pub async fn delete_action_type(
    conn: &mut Conn,
    region: &str,
    (category, provider, version): (&str, &str, &str),
) -> Result<bool> {
    let n = sqlx::query("DELETE FROM cp_action_types WHERE region = $1 AND category = $2 AND provider = $3 AND version = $4")
        .bind(region)
        .bind(category)
        .bind(provider)
        .bind(version)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// The definitions of a region's custom action types.
pub async fn action_types(conn: &mut Conn, region: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT definition FROM cp_action_types WHERE region = $1 ORDER BY category, provider, version")
        .bind(region)
        .fetch_all(&mut *conn)
        .await?)
}

pub async fn action_type_exists(
    conn: &mut Conn,
    region: &str,
    (category, provider, version): (&str, &str, &str),
) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM cp_action_types WHERE region = $1 AND category = $2 AND provider = $3 AND version = $4")
        .bind(region)
        .bind(category)
        .bind(provider)
        .bind(version)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// A job for a custom action's worker.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub status: String,
    pub nonce: String,
    /// The JobData (JSON).
    pub data: String,
}

/// The queued jobs of an action type, oldest first.
pub async fn queued_jobs(
    conn: &mut Conn,
    region: &str,
    (category, provider, version): (&str, &str, &str),
) -> Result<Vec<JobRow>> {
    let rows = sqlx::query("SELECT job_id, status, nonce, data FROM cp_jobs WHERE region = $1 AND category = $2 AND provider = $3 AND version = $4 AND status = 'Queued' ORDER BY created_at")
        .bind(region)
        .bind(category)
        .bind(provider)
        .bind(version)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(job_from).collect())
}

fn job_from(r: &sqlx::sqlite::SqliteRow) -> JobRow {
    JobRow {
        id: r.get(0),
        status: r.get(1),
        nonce: r.get(2),
        data: r.get(3),
    }
}

pub async fn job(conn: &mut Conn, region: &str, id: &str) -> Result<Option<JobRow>> {
    let row = sqlx::query(
        "SELECT job_id, status, nonce, data FROM cp_jobs WHERE region = $1 AND job_id = $2",
    )
    .bind(region)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(job_from))
}

pub async fn set_job_status(conn: &mut Conn, id: &str, status: &str, t: f64) -> Result<()> {
    sqlx::query("UPDATE cp_jobs SET status = $2, updated_at = $3 WHERE job_id = $1")
        .bind(id)
        .bind(status)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records a job's result (JSON) with its final status.
pub async fn set_job_result(
    conn: &mut Conn,
    id: &str,
    status: &str,
    result: &str,
    t: f64,
) -> Result<()> {
    sqlx::query("UPDATE cp_jobs SET status = $2, result = $3, updated_at = $4 WHERE job_id = $1")
        .bind(id)
        .bind(status)
        .bind(result)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A job's status and result (JSON), if it exists.
pub async fn job_result(conn: &mut Conn, id: &str) -> Result<Option<(String, Option<String>)>> {
    let row = sqlx::query("SELECT status, result FROM cp_jobs WHERE job_id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// A new job, queued.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub region: &'a str,
    pub action_type: (&'a str, &'a str, &'a str),
    pub action_execution_id: &'a str,
    pub nonce: &'a str,
    pub data: &'a str,
    pub t: f64,
}

pub async fn insert_job(conn: &mut Conn, j: &NewJob<'_>) -> Result<()> {
    sqlx::query("INSERT INTO cp_jobs (job_id, region, category, provider, version, action_execution_id, nonce, status, data, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'Queued', $8, $9, $9)")
        .bind(j.id)
        .bind(j.region)
        .bind(j.action_type.0)
        .bind(j.action_type.1)
        .bind(j.action_type.2)
        .bind(j.action_execution_id)
        .bind(j.nonce)
        .bind(j.data)
        .bind(j.t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ----- webhooks -----

#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub region: String,
    pub name: String,
    pub token: String,
    pub pipeline: String,
    /// The definition without its secret (JSON).
    pub definition: String,
    /// The sealed secret token.
    pub secret: Option<Vec<u8>>,
    pub last_triggered: Option<f64>,
}

const WEBHOOK_COLUMNS: &str = "region, name, token, pipeline, definition, secret, last_triggered";

fn webhook_from(r: &sqlx::sqlite::SqliteRow) -> WebhookRow {
    WebhookRow {
        region: r.get(0),
        name: r.get(1),
        token: r.get(2),
        pipeline: r.get(3),
        definition: r.get(4),
        secret: r.get(5),
        last_triggered: r.get(6),
    }
}

/// A webhook to create or replace.
#[derive(Debug, Clone)]
pub struct NewWebhook<'a> {
    pub region: &'a str,
    pub name: &'a str,
    /// The token a new webhook gets (one that exists keeps its own).
    pub token: &'a str,
    pub pipeline: &'a str,
    pub definition: &'a str,
    pub secret: Option<&'a [u8]>,
    pub t: f64,
}

/// Creates a webhook, or replaces the definition and secret of one of that name (its
/// token stays); its token.
pub async fn put_webhook(conn: &mut Conn, w: &NewWebhook<'_>) -> Result<String> {
    let NewWebhook {
        region,
        name,
        token: new_token,
        pipeline,
        definition,
        secret,
        t,
    } = *w;
    let token: String = sqlx::query_scalar(
        "INSERT INTO cp_webhooks (region, name, token, pipeline, definition, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (region, name) DO UPDATE SET pipeline = excluded.pipeline, definition = excluded.definition, secret = excluded.secret RETURNING token",
    )
    .bind(region)
    .bind(name)
    .bind(new_token)
    .bind(pipeline)
    .bind(definition)
    .bind(secret)
    .bind(t)
    .fetch_one(&mut *conn)
    .await?;
    Ok(token)
}

/// A region's webhooks by name (or the one named).
pub async fn webhooks(
    conn: &mut Conn,
    region: &str,
    name: Option<&str>,
) -> Result<Vec<WebhookRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM cp_webhooks WHERE region = $1 AND ($2 = '' OR name = $2) ORDER BY name"
    ))
    .bind(region)
    .bind(name.unwrap_or_default())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(webhook_from).collect())
}

/// The webhook a URL token names, in any region.
pub async fn webhook_by_token(conn: &mut Conn, token: &str) -> Result<Option<WebhookRow>> {
    let row = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM cp_webhooks WHERE token = $1"
    ))
    .bind(token)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(webhook_from))
}

pub async fn delete_webhook(conn: &mut Conn, region: &str, name: &str) -> Result<()> {
    sqlx::query("DELETE FROM cp_webhooks WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks a webhook registered or not; whether it exists.
pub async fn set_registered(
    conn: &mut Conn,
    region: &str,
    name: &str,
    registered: bool,
) -> Result<bool> {
    let n = sqlx::query("UPDATE cp_webhooks SET registered = $3 WHERE region = $1 AND name = $2")
        .bind(region)
        .bind(name)
        .bind(registered as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

pub async fn webhook_triggered(conn: &mut Conn, token: &str, t: f64) -> Result<()> {
    sqlx::query("UPDATE cp_webhooks SET last_triggered = $2 WHERE token = $1")
        .bind(token)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{self, Event};

    async fn event(s: &crate::Store) -> i64 {
        let mut tx = s.begin_write().await.unwrap();
        events::append(
            &mut tx,
            &Event {
                source: "aws.s3",
                detail_type: "Object Created",
                account: "000000000000".into(),
                region: "us-east-1".into(),
                resources: vec![],
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let mut conn = s.pool().acquire().await.unwrap();
        let rows = events::after(&mut conn, 0, 1000).await.unwrap();
        rows.last().unwrap().0
    }

    #[tokio::test]
    async fn a_pipeline_records_the_events_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::Store::open(dir.path(), "us-east-1").await.unwrap();
        let before = event(&s).await;
        let mut tx = s.begin_write().await.unwrap();
        assert!(
            insert_pipeline(&mut tx, "us-east-1", "p", "{}", 1.0, "root")
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let after = event(&s).await;
        let mut conn = s.pool().acquire().await.unwrap();
        let row = pipeline(&mut conn, "us-east-1", "p")
            .await
            .unwrap()
            .unwrap();
        // The event committed before the pipeline does not concern it; the one after does.
        assert_eq!(row.events_after, before);
        assert!(after > row.events_after);
    }
}
