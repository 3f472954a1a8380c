//! `slipway admin`: IAM administration with the subcommands, flags and JSON output of `aws iam`.
//! Works directly on the data directory, also while the server runs.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use slipway_iam::crypto::MasterKey;
use slipway_iam::{Iam, IamError};
use slipway_store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[arg(long, env = "SLIPWAY_DATA_DIR", default_value = "./slipway-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "SLIPWAY_ACCOUNT_ID", default_value = "000000000000")]
    pub account_id: String,
    /// The server's default region: what a data directory from before regions is given
    /// when this command is the first to open it.
    #[arg(long, env = "SLIPWAY_REGION", default_value = "us-east-1")]
    pub region: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    CreateUser {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        path: Option<String>,
    },
    GetUser {
        #[arg(long)]
        user_name: String,
    },
    ListUsers,
    DeleteUser {
        #[arg(long)]
        user_name: String,
    },
    CreateAccessKey {
        #[arg(long)]
        user_name: String,
    },
    /// Sets the user's console password (`-` reads it from standard input).
    #[command(visible_alias = "update-login-profile")]
    CreateLoginProfile {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        password: String,
    },
    ListAccessKeys {
        #[arg(long)]
        user_name: String,
    },
    UpdateAccessKey {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        access_key_id: String,
        #[arg(long)]
        status: String,
    },
    DeleteAccessKey {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        access_key_id: String,
    },
    PutUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
        /// The policy JSON, or file://PATH.
        #[arg(long)]
        policy_document: String,
    },
    GetUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
    },
    ListUserPolicies {
        #[arg(long)]
        user_name: String,
    },
    DeleteUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
    },
    CreateServiceSpecificCredential {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        service_name: String,
    },
    ListServiceSpecificCredentials {
        #[arg(long)]
        user_name: String,
    },
    DeleteServiceSpecificCredential {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        service_specific_credential_id: String,
    },
    /// Adds a new master key and re-wraps every secret's key under it (data is not rewritten).
    RotateMasterKey,
    /// Imports a build image: an OCI image layout (a directory, or a tar of one) or a
    /// `docker save` archive, as NAME (e.g. `aws/codebuild/standard:7.0` or `myteam/ci:1`).
    /// Builds whose environment names it run on it.
    ImportImage {
        name: String,
        path: PathBuf,
        /// Where images are kept (default: DATA_DIR/images, where the built-in worker looks;
        /// a remote worker looks in its --images-dir).
        #[arg(long)]
        images_dir: Option<PathBuf>,
    },
    /// Lists the imported build images.
    ListImages {
        #[arg(long)]
        images_dir: Option<PathBuf>,
    },
}

impl AdminCommand {
    /// The IAM operation name, for error messages in the aws-cli's format.
    fn operation(&self) -> String {
        let debug = format!("{self:?}");
        debug
            .split([' ', '{'])
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

fn read_document(arg: &str) -> Result<String, IamError> {
    match arg.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| IamError::Validation(format!("cannot read {path}: {e}"))),
        None => Ok(arg.to_owned()),
    }
}

async fn execute(
    store: &Store,
    iam: &Iam,
    key: &MasterKey,
    cmd: &AdminCommand,
) -> Result<Option<Value>, IamError> {
    use AdminCommand::*;
    Ok(match cmd {
        CreateUser { user_name, path } => {
            Some(json!({ "User": iam.create_user(user_name, path.as_deref()).await? }))
        }
        GetUser { user_name } => Some(json!({ "User": iam.get_user(user_name).await? })),
        ListUsers => Some(json!({ "Users": iam.list_users().await? })),
        DeleteUser { user_name } => iam.delete_user(user_name).await.map(|_| None)?,
        CreateAccessKey { user_name } => {
            Some(json!({ "AccessKey": iam.create_access_key(user_name).await? }))
        }
        CreateLoginProfile {
            user_name,
            password,
        } => {
            let password = match password.as_str() {
                "-" => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| IamError::Validation(format!("reading the password: {e}")))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
                p => p.to_owned(),
            };
            iam.set_password(user_name, &password).await?;
            let created = slipway_iam::iso8601(slipway_store::now());
            Some(json!({ "LoginProfile": { "UserName": user_name, "CreateDate": created } }))
        }
        ListAccessKeys { user_name } => {
            Some(json!({ "AccessKeyMetadata": iam.list_access_keys(user_name).await? }))
        }
        UpdateAccessKey {
            user_name,
            access_key_id,
            status,
        } => iam
            .update_access_key(user_name, access_key_id, status)
            .await
            .map(|_| None)?,
        DeleteAccessKey {
            user_name,
            access_key_id,
        } => iam
            .delete_access_key(user_name, access_key_id)
            .await
            .map(|_| None)?,
        PutUserPolicy {
            user_name,
            policy_name,
            policy_document,
        } => iam
            .put_user_policy(user_name, policy_name, &read_document(policy_document)?)
            .await
            .map(|_| None)?,
        GetUserPolicy {
            user_name,
            policy_name,
        } => {
            let doc = iam.get_user_policy(user_name, policy_name).await?;
            let parsed: Value = serde_json::from_str(&doc).unwrap_or(Value::String(doc));
            Some(
                json!({ "UserName": user_name, "PolicyName": policy_name, "PolicyDocument": parsed }),
            )
        }
        ListUserPolicies { user_name } => {
            Some(json!({ "PolicyNames": iam.list_user_policies(user_name).await? }))
        }
        DeleteUserPolicy {
            user_name,
            policy_name,
        } => iam
            .delete_user_policy(user_name, policy_name)
            .await
            .map(|_| None)?,
        CreateServiceSpecificCredential {
            user_name,
            service_name,
        } => Some(json!({
            "ServiceSpecificCredential": iam.create_service_specific_credential(user_name, service_name).await?
        })),
        ListServiceSpecificCredentials { user_name } => Some(
            json!({ "ServiceSpecificCredentials": iam.list_service_specific_credentials(user_name).await? }),
        ),
        RotateMasterKey => Some(rotate(store, iam, key).await?),
        ImportImage { .. } | ListImages { .. } => None,
        DeleteServiceSpecificCredential {
            user_name,
            service_specific_credential_id,
        } => iam
            .delete_service_specific_credential(user_name, service_specific_credential_id)
            .await
            .map(|_| None)?,
    })
}

/// `rotate-master-key`: new primary key, then every secret re-wrapped under it. Older keys
/// stay in the key file so that anything written with them meanwhile still reads.
async fn rotate(store: &Store, iam: &Iam, key: &MasterKey) -> Result<Value, IamError> {
    let id = key
        .add_primary()
        .map_err(|e| IamError::Internal(e.to_string()))?;
    eprintln!("added master key {id:08x}; re-wrapping secrets…");
    let keys = iam.reencrypt_secrets().await?;
    let params = slipway_ssm::rewrap_secrets(store, key)
        .await
        .map_err(|e| IamError::Internal(e.to_string()))?;
    let blobs = slipway_s3::S3Store::rewrap_keys(store, key)
        .await
        .map_err(IamError::Internal)?;
    let jobs = slipway_codebuild::service::rewrap_jobs(store, key)
        .await
        .map_err(|e| IamError::Internal(e.to_string()))?;
    let logs = slipway_codebuild::logstore::rewrap_logs(store, key)
        .await
        .map_err(|e| IamError::Internal(e.to_string()))?;
    Ok(json!({
        "MasterKeyId": format!("{id:08x}"),
        "BuildJobsRewrapped": jobs,
        "BuildLogKeysRewrapped": logs,
        "AccessKeysReencrypted": keys,
        "SecureStringVersionsRewrapped": params,
        "ObjectDataKeysRewrapped": blobs,
    }))
}

/// `import-image` and `list-images`: files only, no database.
fn images(args: &AdminArgs) -> Option<Result<Value, String>> {
    let dir = |d: &Option<PathBuf>| d.clone().unwrap_or_else(|| args.data_dir.join("images"));
    match &args.command {
        AdminCommand::ImportImage {
            name,
            path,
            images_dir,
        } => Some(
            slipway_codebuild::images::import(&dir(images_dir), name, path, &mut |m| {
                eprintln!("slipway: {m}")
            })
            .map(|i| {
                json!({
                    "Name": i.name,
                    "Digest": i.digest,
                    "Layers": i.layers,
                    "RootFilesystem": i.rootfs,
                })
            }),
        ),
        AdminCommand::ListImages { images_dir } => Some(Ok(
            json!({ "Images": slipway_codebuild::images::list(&dir(images_dir)) }),
        )),
        _ => None,
    }
}

pub async fn run(args: AdminArgs) -> Result<ExitCode> {
    if let Some(result) = images(&args) {
        return Ok(match result {
            Ok(out) => {
                println!("{}", serde_json::to_string_pretty(&out)?);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("slipway: {e}");
                ExitCode::FAILURE
            }
        });
    }
    let (store, iam, key) =
        crate::server::open_data_dir(&args.data_dir, &args.account_id, &args.region, false).await?;
    match execute(&store, &iam, &key, &args.command).await {
        Ok(Some(out)) => {
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // The aws-cli's format and exit status for a service error.
            eprintln!(
                "\nAn error occurred ({}) when calling the {} operation: {e}",
                e.code(),
                args.command.operation()
            );
            Ok(ExitCode::from(254))
        }
    }
}
