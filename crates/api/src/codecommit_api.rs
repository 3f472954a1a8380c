//! CodeCommit's JSON API: maps the generated request/response shapes onto the domain crate.

use slipway_codecommit::files::{CommitRequest, DiffQuery, FileMode, PutFile};
use slipway_codecommit::{self as cc, Caller, CodeCommit, Repository, SortBy};
use slipway_model::codecommit::*;
use slipway_model::{ApiError, Blob, Context, Empty};

/// The CodeCommit API over a [`CodeCommit`] service.
pub struct CodeCommitService {
    pub cc: CodeCommit,
}

use crate::domain_error as api_error;

/// A member the generated validation has already proven present.
fn req<T: Default>(v: Option<T>) -> T {
    v.unwrap_or_default()
}

fn caller(ctx: &Context) -> Caller {
    Caller {
        arn: ctx.principal.arn.clone(),
        name: ctx
            .principal
            .user_name
            .clone()
            .unwrap_or_else(|| "root".into()),
    }
}

fn metadata(ctx: &Context, r: &Repository) -> RepositoryMetadata {
    RepositoryMetadata {
        account_id: Some(ctx.account_id.clone()),
        repository_id: Some(r.id.clone()),
        repository_name: Some(r.name.clone()),
        repository_description: r.description.clone(),
        default_branch: r.default_branch.clone(),
        last_modified_date: Some(r.updated_at),
        creation_date: Some(r.created_at),
        clone_url_http: Some(r.clone_url_http.clone()),
        clone_url_ssh: Some(r.clone_url_ssh.clone()),
        arn: Some(r.arn.clone()),
        kms_key_id: Some(r.kms_key_id.clone()),
    }
}

fn commit_shape(c: cc::files::Commit) -> Commit {
    let user = |p: cc::files::Person| UserInfo {
        name: Some(p.name),
        email: Some(p.email),
        date: Some(p.date),
    };
    Commit {
        commit_id: Some(c.commit_id),
        tree_id: Some(c.tree_id),
        parents: Some(c.parents),
        message: Some(c.message),
        author: Some(user(c.author)),
        committer: Some(user(c.committer)),
        additional_data: Some(String::new()),
    }
}

fn file_mode(mode: Option<String>) -> Option<FileMode> {
    mode.as_deref().and_then(FileMode::from_aws)
}

fn changes(list: Vec<cc::files::Change>) -> Option<Vec<FileMetadata>> {
    Some(
        list.into_iter()
            .map(|c| FileMetadata {
                absolute_path: Some(c.path),
                blob_id: Some(c.blob_id),
                file_mode: Some(c.mode.aws().into()),
            })
            .collect(),
    )
}

impl CodeCommitService {
    async fn repo(&self, name: &str) -> Result<Repository, ApiError> {
        self.cc.get(name).await.map_err(api_error)
    }
}

impl CodeCommitApi for CodeCommitService {
    async fn create_repository(
        &self,
        ctx: &Context,
        input: CreateRepositoryInput,
    ) -> Result<CreateRepositoryOutput, ApiError> {
        let r = self
            .cc
            .create_repository(
                &req(input.repository_name),
                input.repository_description.as_deref(),
                &input.tags.unwrap_or_default(),
                input.kms_key_id.as_deref(),
            )
            .await
            .map_err(api_error)?;
        Ok(CreateRepositoryOutput {
            repository_metadata: Some(metadata(ctx, &r)),
        })
    }

    async fn get_repository(
        &self,
        ctx: &Context,
        input: GetRepositoryInput,
    ) -> Result<GetRepositoryOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        Ok(GetRepositoryOutput {
            repository_metadata: Some(metadata(ctx, &r)),
        })
    }

    async fn batch_get_repositories(
        &self,
        ctx: &Context,
        input: BatchGetRepositoriesInput,
    ) -> Result<BatchGetRepositoriesOutput, ApiError> {
        let names = req(input.repository_names);
        if names.is_empty() {
            return Err(ApiError::new(
                "RepositoryNamesRequiredException",
                400,
                "At least one repository name is required.",
            ));
        }
        if names.len() > 100 {
            return Err(ApiError::new(
                "MaximumRepositoryNamesExceededException",
                400,
                "The maximum number of allowed repository names was exceeded. Currently, this number is 100.",
            ));
        }
        let (mut found, mut missing, mut errors) = (vec![], vec![], vec![]);
        for name in names {
            match self.cc.find(&name).await.map_err(api_error)? {
                Some(r) => found.push(metadata(ctx, &r)),
                None => {
                    errors.push(BatchGetRepositoriesError {
                        repository_id: None,
                        repository_name: Some(name.clone()),
                        error_code: Some("RepositoryDoesNotExistException".into()),
                        error_message: Some(format!("{name} does not exist")),
                    });
                    missing.push(name);
                }
            }
        }
        Ok(BatchGetRepositoriesOutput {
            repositories: Some(found),
            repositories_not_found: Some(missing),
            errors: Some(errors),
        })
    }

    async fn list_repositories(
        &self,
        _ctx: &Context,
        input: ListRepositoriesInput,
    ) -> Result<ListRepositoriesOutput, ApiError> {
        let sort = match input.sort_by.as_deref() {
            Some("lastModifiedDate") => SortBy::LastModified,
            _ => SortBy::Name,
        };
        let ascending = input.order.as_deref() != Some("descending");
        let page = self
            .cc
            .list_repositories(sort, ascending, input.next_token.as_deref())
            .await
            .map_err(api_error)?;
        Ok(ListRepositoriesOutput {
            repositories: Some(
                page.items
                    .into_iter()
                    .map(|(name, id)| RepositoryNameIdPair {
                        repository_name: Some(name),
                        repository_id: Some(id),
                    })
                    .collect(),
            ),
            next_token: page.next_token,
        })
    }

    async fn delete_repository(
        &self,
        _ctx: &Context,
        input: DeleteRepositoryInput,
    ) -> Result<DeleteRepositoryOutput, ApiError> {
        let name = req(input.repository_name);
        let id = self.cc.delete_repository(&name).await.map_err(api_error)?;
        Ok(DeleteRepositoryOutput { repository_id: id })
    }

    async fn update_repository_name(
        &self,
        _ctx: &Context,
        input: UpdateRepositoryNameInput,
    ) -> Result<Empty, ApiError> {
        self.cc
            .update_repository_name(&req(input.old_name), &req(input.new_name))
            .await
            .map_err(api_error)?;
        Ok(Empty {})
    }

    async fn update_repository_description(
        &self,
        _ctx: &Context,
        input: UpdateRepositoryDescriptionInput,
    ) -> Result<Empty, ApiError> {
        self.cc
            .update_repository_description(
                &req(input.repository_name),
                input.repository_description.as_deref(),
            )
            .await
            .map_err(api_error)?;
        Ok(Empty {})
    }

    async fn create_branch(
        &self,
        ctx: &Context,
        input: CreateBranchInput,
    ) -> Result<Empty, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        self.cc
            .create_branch(
                &r,
                &req(input.branch_name),
                &req(input.commit_id),
                &ctx.principal.arn,
            )
            .await
            .map_err(api_error)?;
        Ok(Empty {})
    }

    async fn get_branch(
        &self,
        _ctx: &Context,
        input: GetBranchInput,
    ) -> Result<GetBranchOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let branch = req(input.branch_name);
        let commit = self.cc.get_branch(&r, &branch).await.map_err(api_error)?;
        Ok(GetBranchOutput {
            branch: Some(BranchInfo {
                branch_name: Some(branch),
                commit_id: Some(commit),
            }),
        })
    }

    async fn list_branches(
        &self,
        _ctx: &Context,
        input: ListBranchesInput,
    ) -> Result<ListBranchesOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let page = self
            .cc
            .list_branches(&r, input.next_token.as_deref())
            .await
            .map_err(api_error)?;
        Ok(ListBranchesOutput {
            branches: Some(page.items),
            next_token: page.next_token,
        })
    }

    async fn delete_branch(
        &self,
        ctx: &Context,
        input: DeleteBranchInput,
    ) -> Result<DeleteBranchOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let branch = req(input.branch_name);
        let tip = self
            .cc
            .delete_branch(&r, &branch, &ctx.principal.arn)
            .await
            .map_err(api_error)?;
        Ok(DeleteBranchOutput {
            deleted_branch: tip.map(|c| BranchInfo {
                branch_name: Some(branch),
                commit_id: Some(c),
            }),
        })
    }

    async fn update_default_branch(
        &self,
        _ctx: &Context,
        input: UpdateDefaultBranchInput,
    ) -> Result<Empty, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        self.cc
            .update_default_branch(&r, &req(input.default_branch_name))
            .await
            .map_err(api_error)?;
        Ok(Empty {})
    }

    async fn get_blob(
        &self,
        _ctx: &Context,
        input: GetBlobInput,
    ) -> Result<GetBlobOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let content = self
            .cc
            .get_blob(&r, &req(input.blob_id))
            .await
            .map_err(api_error)?;
        Ok(GetBlobOutput {
            content: Some(Blob(content)),
        })
    }

    async fn get_file(
        &self,
        _ctx: &Context,
        input: GetFileInput,
    ) -> Result<GetFileOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let f = self
            .cc
            .get_file(&r, input.commit_specifier.as_deref(), &req(input.file_path))
            .await
            .map_err(api_error)?;
        Ok(GetFileOutput {
            commit_id: Some(f.commit_id),
            blob_id: Some(f.blob_id),
            file_path: Some(f.path),
            file_mode: Some(f.mode.aws().into()),
            file_size: Some(f.size as i64),
            file_content: Some(Blob(f.content)),
        })
    }

    async fn get_folder(
        &self,
        _ctx: &Context,
        input: GetFolderInput,
    ) -> Result<GetFolderOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let f = self
            .cc
            .get_folder(
                &r,
                input.commit_specifier.as_deref(),
                &req(input.folder_path),
            )
            .await
            .map_err(api_error)?;
        let mode = |m: Option<FileMode>| m.map(|m| m.aws().to_owned());
        Ok(GetFolderOutput {
            commit_id: Some(f.commit_id),
            folder_path: Some(f.path),
            tree_id: Some(f.tree_id),
            sub_folders: Some(
                f.sub_folders
                    .into_iter()
                    .map(|e| Folder {
                        tree_id: Some(e.id),
                        absolute_path: Some(e.absolute_path),
                        relative_path: Some(e.relative_path),
                    })
                    .collect(),
            ),
            files: Some(
                f.files
                    .into_iter()
                    .map(|e| File {
                        blob_id: Some(e.id),
                        absolute_path: Some(e.absolute_path),
                        relative_path: Some(e.relative_path),
                        file_mode: mode(e.mode),
                    })
                    .collect(),
            ),
            symbolic_links: Some(
                f.symbolic_links
                    .into_iter()
                    .map(|e| SymbolicLink {
                        blob_id: Some(e.id),
                        absolute_path: Some(e.absolute_path),
                        relative_path: Some(e.relative_path),
                        file_mode: mode(e.mode),
                    })
                    .collect(),
            ),
            sub_modules: Some(
                f.sub_modules
                    .into_iter()
                    .map(|e| SubModule {
                        commit_id: Some(e.id),
                        absolute_path: Some(e.absolute_path),
                        relative_path: Some(e.relative_path),
                    })
                    .collect(),
            ),
        })
    }

    async fn put_file(
        &self,
        ctx: &Context,
        input: PutFileInput,
    ) -> Result<PutFileOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let content = req(input.file_content).0;
        if content.is_empty() {
            return Err(ApiError::new("FileContentRequiredException", 400, "The file cannot be added because it is empty. Empty files cannot be added to the repository with this API."));
        }
        let path = req(input.file_path);
        let request = CommitRequest {
            branch: req(input.branch_name),
            parent: input.parent_commit_id,
            author_name: input.name,
            email: input.email,
            message: input.commit_message,
            put: vec![PutFile {
                path: path.clone(),
                mode: file_mode(input.file_mode),
                content: Some(content),
                source: None,
            }],
            ..Default::default()
        };
        let res = self
            .cc
            .create_commit(&r, &request, &caller(ctx), "SameFileContentException")
            .await
            .map_err(api_error)?;
        let blob = res
            .added
            .iter()
            .chain(res.updated.iter())
            .next()
            .map(|c| c.blob_id.clone());
        Ok(PutFileOutput {
            commit_id: Some(res.commit_id),
            blob_id: blob,
            tree_id: Some(res.tree_id),
        })
    }

    async fn delete_file(
        &self,
        ctx: &Context,
        input: DeleteFileInput,
    ) -> Result<DeleteFileOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let path = req(input.file_path);
        let request = CommitRequest {
            branch: req(input.branch_name),
            parent: input.parent_commit_id,
            author_name: input.name,
            email: input.email,
            message: input.commit_message,
            keep_empty_folders: input.keep_empty_folders.unwrap_or(false),
            delete: vec![path.clone()],
            ..Default::default()
        };
        let res = self
            .cc
            .create_commit(&r, &request, &caller(ctx), "NoChangeException")
            .await
            .map_err(api_error)?;
        let deleted = res.deleted.first();
        Ok(DeleteFileOutput {
            commit_id: Some(res.commit_id.clone()),
            blob_id: deleted.map(|c| c.blob_id.clone()),
            tree_id: Some(res.tree_id.clone()),
            file_path: deleted.map(|c| c.path.clone()),
        })
    }

    async fn create_commit(
        &self,
        ctx: &Context,
        input: CreateCommitInput,
    ) -> Result<CreateCommitOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let request = CommitRequest {
            branch: req(input.branch_name),
            parent: input.parent_commit_id,
            author_name: input.author_name,
            email: input.email,
            message: input.commit_message,
            keep_empty_folders: input.keep_empty_folders.unwrap_or(false),
            put: input
                .put_files
                .unwrap_or_default()
                .into_iter()
                .map(|p| PutFile {
                    path: req(p.file_path),
                    mode: file_mode(p.file_mode),
                    content: p.file_content.map(|b| b.0),
                    source: p
                        .source_file
                        .map(|s| (req(s.file_path), s.is_move.unwrap_or(false))),
                })
                .collect(),
            delete: input
                .delete_files
                .unwrap_or_default()
                .into_iter()
                .map(|d| req(d.file_path))
                .collect(),
            set_modes: input
                .set_file_modes
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| Some((req(s.file_path), file_mode(s.file_mode)?)))
                .collect(),
        };
        let res = self
            .cc
            .create_commit(&r, &request, &caller(ctx), "NoChangeException")
            .await
            .map_err(api_error)?;
        Ok(CreateCommitOutput {
            commit_id: Some(res.commit_id),
            tree_id: Some(res.tree_id),
            files_added: changes(res.added),
            files_updated: changes(res.updated),
            files_deleted: changes(res.deleted),
        })
    }

    async fn get_commit(
        &self,
        _ctx: &Context,
        input: GetCommitInput,
    ) -> Result<GetCommitOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let c = self
            .cc
            .get_commit(&r, &req(input.commit_id))
            .await
            .map_err(api_error)?;
        Ok(GetCommitOutput {
            commit: Some(commit_shape(c)),
        })
    }

    async fn batch_get_commits(
        &self,
        _ctx: &Context,
        input: BatchGetCommitsInput,
    ) -> Result<BatchGetCommitsOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let (mut commits, mut errors) = (vec![], vec![]);
        for id in req(input.commit_ids) {
            match self.cc.get_commit(&r, &id).await {
                Ok(c) => commits.push(commit_shape(c)),
                Err(cc::Error::Api { code, message }) => errors.push(BatchGetCommitsError {
                    commit_id: Some(id),
                    error_code: Some(code.into()),
                    error_message: Some(message),
                }),
                Err(e) => return Err(api_error(e)),
            }
        }
        Ok(BatchGetCommitsOutput {
            commits: Some(commits),
            errors: Some(errors),
        })
    }

    async fn list_file_commit_history(
        &self,
        _ctx: &Context,
        input: ListFileCommitHistoryRequest,
    ) -> Result<ListFileCommitHistoryResponse, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let path = req(input.file_path);
        let history = self
            .cc
            .file_history(&r, input.commit_specifier.as_deref(), &path)
            .await
            .map_err(api_error)?;
        let max = input.max_results.filter(|m| *m > 0).unwrap_or(100) as usize;
        let page = cc::paginate(
            history,
            input.next_token.as_deref(),
            max,
            "InvalidContinuationTokenException",
        )
        .map_err(api_error)?;
        let norm = cc::files::normalize_path(&path, false).map_err(api_error)?;
        let mut dag = Vec::new();
        for (id, children) in page.items {
            let c = self.cc.get_commit(&r, &id).await.map_err(api_error)?;
            let blob = self.cc.blob_at(&r, &id, &norm).await.map_err(api_error)?;
            dag.push(FileVersion {
                commit: Some(commit_shape(c)),
                blob_id: blob,
                path: Some(norm.clone()),
                revision_children: Some(children),
            });
        }
        Ok(ListFileCommitHistoryResponse {
            revision_dag: Some(dag),
            next_token: page.next_token,
        })
    }

    async fn get_differences(
        &self,
        _ctx: &Context,
        input: GetDifferencesInput,
    ) -> Result<GetDifferencesOutput, ApiError> {
        let r = self.repo(&req(input.repository_name)).await?;
        let max = input.max_results.filter(|m| *m > 0).unwrap_or(100) as usize;
        let page = self
            .cc
            .get_differences(
                &r,
                &DiffQuery {
                    before: input.before_commit_specifier.as_deref(),
                    after: &req(input.after_commit_specifier),
                    before_path: input.before_path.as_deref(),
                    after_path: input.after_path.as_deref(),
                    max,
                    token: input.next_token.as_deref(),
                },
            )
            .await
            .map_err(api_error)?;
        let blob = |b: Option<cc::files::BlobMeta>| {
            b.map(|b| BlobMetadata {
                blob_id: Some(b.blob_id),
                path: Some(b.path),
                mode: Some(b.mode),
            })
        };
        Ok(GetDifferencesOutput {
            differences: Some(
                page.items
                    .into_iter()
                    .map(|d| Difference {
                        before_blob: blob(d.before),
                        after_blob: blob(d.after),
                        change_type: Some(d.change_type.to_string()),
                    })
                    .collect(),
            ),
            next_token: page.next_token,
        })
    }

    async fn tag_resource(
        &self,
        _ctx: &Context,
        input: TagResourceInput,
    ) -> Result<Empty, ApiError> {
        let r = self
            .cc
            .repository_for_arn(&req(input.resource_arn))
            .await
            .map_err(api_error)?;
        self.cc.tag(&r, &req(input.tags)).await.map_err(api_error)?;
        Ok(Empty {})
    }

    async fn untag_resource(
        &self,
        _ctx: &Context,
        input: UntagResourceInput,
    ) -> Result<Empty, ApiError> {
        let r = self
            .cc
            .repository_for_arn(&req(input.resource_arn))
            .await
            .map_err(api_error)?;
        self.cc
            .untag(&r, &req(input.tag_keys))
            .await
            .map_err(api_error)?;
        Ok(Empty {})
    }

    async fn list_tags_for_resource(
        &self,
        _ctx: &Context,
        input: ListTagsForResourceInput,
    ) -> Result<ListTagsForResourceOutput, ApiError> {
        let r = self
            .cc
            .repository_for_arn(&req(input.resource_arn))
            .await
            .map_err(api_error)?;
        Ok(ListTagsForResourceOutput {
            tags: Some(self.cc.tags(&r).await.map_err(api_error)?),
            next_token: None,
        })
    }
}
