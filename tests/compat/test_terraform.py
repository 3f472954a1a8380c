"""Terraform's hashicorp/aws provider against Slipway: a repository, a build project, a V2
pipeline with a variable and tags, and a webhook — apply, a clean plan, a change, a clean
plan again, destroy. Runs where Terraform and the provider (a local filesystem mirror) are
installed; skipped elsewhere, saying why."""

import os
import pathlib
import shutil
import subprocess

import pytest

MIRROR = pathlib.Path(os.environ.get("SLIPWAY_TF_MIRROR", "/opt/tf-plugins"))
PROVIDER = MIRROR / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0"

MAIN_TF = r"""terraform {
  required_providers { aws = { source = "hashicorp/aws", version = "5.100.0" } }
}
variable "endpoint" { type = string }
variable "target" {
  type    = string
  default = "beta"
}
provider "aws" {
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {
    codecommit   = "${var.endpoint}"
    codebuild    = "${var.endpoint}"
    codepipeline = "${var.endpoint}"
    s3           = "${var.endpoint}"
  }
  s3_use_path_style = true
}
resource "aws_codecommit_repository" "app" {
  repository_name = "tf-app"
}
resource "aws_codebuild_project" "build" {
  name         = "tf-build"
  service_role = "arn:aws:iam::000000000000:role/codebuild"
  source { type = "CODEPIPELINE" }
  artifacts { type = "CODEPIPELINE" }
  environment {
    compute_type = "BUILD_GENERAL1_SMALL"
    image        = "aws/codebuild/standard:7.0"
    type         = "LINUX_CONTAINER"
  }
}
resource "aws_codepipeline" "release" {
  name          = "tf-release"
  role_arn      = "arn:aws:iam::000000000000:role/pipeline"
  pipeline_type = "V2"
  artifact_store {
    location = "artifacts"
    type     = "S3"
  }
  variable {
    name          = "target"
    default_value = var.target
  }
  stage {
    name = "Source"
    action {
      name             = "Source"
      category         = "Source"
      owner            = "AWS"
      provider         = "CodeCommit"
      version          = "1"
      output_artifacts = ["src"]
      configuration = {
        RepositoryName       = aws_codecommit_repository.app.repository_name
        BranchName           = "main"
        PollForSourceChanges = "false"
      }
    }
  }
  stage {
    name = "Build"
    action {
      name             = "Build"
      category         = "Build"
      owner            = "AWS"
      provider         = "CodeBuild"
      version          = "1"
      input_artifacts  = ["src"]
      output_artifacts = ["out"]
      configuration = { ProjectName = aws_codebuild_project.build.name }
    }
  }
  stage {
    name = "Deploy"
    action {
      name            = "Deploy"
      category        = "Deploy"
      owner           = "AWS"
      provider        = "S3"
      version         = "1"
      input_artifacts = ["out"]
      configuration = { BucketName = "site", Extract = "true" }
    }
  }
  tags = { team = "web" }
}
resource "aws_codepipeline_webhook" "hook" {
  name            = "tf-hook"
  authentication  = "GITHUB_HMAC"
  target_action   = "Source"
  target_pipeline = aws_codepipeline.release.name
  authentication_configuration { secret_token = "super-secret-tf" }
  filter {
    json_path    = "$.ref"
    match_equals = "refs/heads/{BranchName}"
  }
}
"""


def test_terraform_round_trip(server, workdir):
    if shutil.which("terraform") is None or not PROVIDER.is_dir():
        pytest.skip(f"terraform or the hashicorp/aws 5.100.0 provider mirror ({PROVIDER}) is not installed")
    for b in ("artifacts", "site"):
        server.aws("s3api", "create-bucket", "--bucket", b)
    server.aws("s3api", "put-bucket-versioning", "--bucket", "artifacts", "--versioning-configuration", "Status=Enabled")
    tf = workdir / "tf"
    tf.mkdir()
    (tf / "main.tf").write_text(MAIN_TF)
    (tf / "rc").write_text(f"""provider_installation {{
  filesystem_mirror {{
    path    = "{MIRROR}"
    include = ["registry.terraform.io/hashicorp/aws"]
  }}
  direct {{ exclude = ["registry.terraform.io/hashicorp/aws"] }}
}}
""")
    env = server.env()
    env.update(TF_CLI_CONFIG_FILE=str(tf / "rc"), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1",
               TF_VAR_endpoint=server.url)

    def run(*args, ok=(0,)):
        p = subprocess.run(["terraform", *args, "-input=false", "-no-color"], cwd=tf, env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode in ok, p.stdout[-4000:] + p.stderr[-4000:]
        return p

    run("init")
    run("apply", "-auto-approve")
    got = server.aws("codepipeline", "get-pipeline", "--name", "tf-release")["pipeline"]
    assert got["variables"] == [{"name": "target", "defaultValue": "beta"}]
    [hook] = server.aws("codepipeline", "list-webhooks")["webhooks"]
    assert hook["definition"]["targetPipeline"] == "tf-release"
    # Nothing drifts: the provider reads back exactly what it wrote.
    run("plan", "-detailed-exitcode")
    run("apply", "-auto-approve", "-var", "target=prod")
    got = server.aws("codepipeline", "get-pipeline", "--name", "tf-release")["pipeline"]
    assert got["version"] == 2 and got["variables"][0]["defaultValue"] == "prod"
    run("plan", "-detailed-exitcode", "-var", "target=prod")
    run("destroy", "-auto-approve", "-var", "target=prod")
    assert server.aws("codepipeline", "list-pipelines")["pipelines"] == []
    assert server.aws("codepipeline", "list-webhooks")["webhooks"] == []
    assert server.aws("codebuild", "list-projects")["projects"] == []
    assert server.aws("codecommit", "list-repositories")["repositories"] == []
