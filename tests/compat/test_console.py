"""The console in a real browser (Playwright driving Debian's Chromium): sign in, browse a
repository pushed by the test, watch a pipeline run without reloading the page, read a
failing build's log and retry its stage, approve from the page, open a deployment and see
its host — and the refusals: no approve button without the permission and 403 for a forged
post, 403 for a post without the CSRF token, injected markup shown as text. Screenshots of
the main pages go to docs/screenshots (shown in README.md)."""

import json
import pathlib
import shutil
import subprocess

import pytest

from test_codebuild import create_project
from test_codedeploy_selfhost import appspec, group_on_self
from test_codepipeline import BUILDSPEC, declaration, push_change, setup

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

SHOTS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"
INJECTED = "<script>window.__pwned = 1</script>"
# The build prints an injected tag and fails until the project's buildspec is fixed.
FAILING = BUILDSPEC.replace("test -f app.txt", f"echo '{INJECTED}' && test -f fixed.txt")


def user(server, name, policy):
    server.admin("create-user", "--user-name", name)
    server.admin("put-user-policy", "--user-name", name, "--policy-name", "p", "--policy-document", json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": policy, "Resource": "*"}]}))
    server.admin("create-login-profile", "--user-name", name, "--password", PASSWORD)


def sign_in(page, server, name):
    page.goto(f"{server.url}/-/console/signin")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/-/console/")


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def stage_badge(page, name):
    return page.locator(f'article.stage[data-stage="{name}"] > header .badge')


def test_console_end_to_end(server, workdir):
    expect = sync_api.expect
    user(server, "dev", ["*"])
    user(server, "viewer", ["codepipeline:Get*", "codepipeline:List*", "codecommit:Get*", "codecommit:List*", "codecommit:BatchGet*"])
    setup(server, workdir, {"app.txt": "v1\n", "buildspec.yml": FAILING})
    server.aws("codebuild", "update-project", "--name", "app-build", "--source", json.dumps({"type": "CODEPIPELINE", "buildspec": FAILING}))
    push_change(server, workdir, INJECTED)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin")
        page = ctx.new_page()
        dialogs, csp = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: csp.append((page.url, m.location, m.text)) if "Content Security Policy" in m.text else None)

        # Signing in: a wrong password is refused in place, the right one lands on home.
        page.goto(f"{server.url}/-/console/pipelines")
        expect(page).to_have_url(f"{server.url}/-/console/signin?next=%2F-%2Fconsole%2Fpipelines")
        page.get_by_label("User name").fill("dev")
        page.get_by_label("Password", exact=True).fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not right")
        sign_in(page, server, "dev")
        expect(page.get_by_text("Signed in as")).to_contain_text("dev")

        # The repository: a tree, a file, the log (the injected commit message is text).
        page.get_by_role("link", name="Repositories", exact=True).click()
        page.get_by_role("link", name="app", exact=True).click()
        expect(page.locator("#clone-url")).to_have_value(server.aws("codecommit", "get-repository", "--repository-name", "app")["repositoryMetadata"]["cloneUrlHttp"])
        page.get_by_role("link", name="buildspec.yml").click()
        expect(page.locator("table.code")).to_contain_text("test -f fixed.txt")
        # Shown as YAML: its keys are marked.
        expect(page.locator("table.code .hk").first).to_have_text("version")
        page.get_by_role("link", name="Commits").click()
        expect(page.locator("ol.commits")).to_contain_text(f"change {INJECTED}")
        shot(page, "repository-commits")
        page.locator("ol.commits a.sha").first.click()
        expect(page.locator("pre.message")).to_contain_text(INJECTED)
        expect(page.locator("pre.diff")).to_contain_text(f"+{INJECTED}")
        shot(page, "commit")

        # The pipeline page is open before anything runs; its graph changes without a reload.
        server.aws("codepipeline", "create-pipeline", "--pipeline", json.dumps(declaration("release")))
        page.goto(f"{server.url}/-/console/pipelines/release")
        page.evaluate("window.__samePage = 42")
        expect(stage_badge(page, "Source")).to_have_text("Succeeded", timeout=60_000)
        expect(stage_badge(page, "Build")).to_have_text("Failed", timeout=120_000)
        assert page.evaluate("window.__samePage") == 42, "the page was reloaded"
        expect(page.locator("#favicon")).to_have_attribute("href", "/-/console/favicon/Failed.svg")
        shot(page, "pipeline-failed")

        # The failed build's log shows its failing line (and the injected tag as text).
        page.locator('article.stage[data-stage="Build"] .action h3 a').click()
        expect(page.locator("#log")).to_contain_text("test -f fixed.txt")
        expect(page.locator("#log")).to_contain_text(INJECTED)
        page.get_by_label("Search the log").fill("fixed.txt")
        expect(page.locator("#log .line:not(.hidden)").first).to_contain_text("fixed.txt")
        shot(page, "build-failed")

        # Fix the project and retry the stage's failed action from the page.
        server.aws("codebuild", "update-project", "--name", "app-build", "--source", json.dumps({"type": "CODEPIPELINE", "buildspec": BUILDSPEC}))
        page.goto(f"{server.url}/-/console/pipelines/release")
        page.evaluate("window.__samePage = 43")
        page.get_by_role("button", name="Retry failed actions").click()
        expect(stage_badge(page, "Build")).to_have_text("Succeeded", timeout=120_000)
        approve = page.get_by_role("button", name="Approve")
        expect(approve).to_be_visible(timeout=60_000)

        # Someone who may not approve sees no button, and a forged post is refused.
        vctx = browser.new_context()
        vpage = vctx.new_page()
        sign_in(vpage, server, "viewer")
        vpage.goto(f"{server.url}/-/console/pipelines/release")
        expect(stage_badge(vpage, "Approve")).to_have_text("InProgress")
        expect(vpage.get_by_role("button", name="Approve")).to_have_count(0)
        expect(vpage.get_by_role("button", name="Release change")).to_have_count(0)
        csrf = vpage.locator("form.signout input[name=csrf]").get_attribute("value")
        token = page.locator("form.approval input[name=token]").get_attribute("value")
        forged = vctx.request.post(f"{server.url}/-/console/pipelines/release/approval", form={
            "csrf": csrf, "stage": "Approve", "action": "Approval", "token": token, "status": "Approved", "summary": "me too"})
        assert forged.status == 403, forged.text()
        assert "AccessDenied" in forged.text()
        vctx.close()
        # A post without this session's CSRF token changes nothing.
        for fields in ({}, {"csrf": "0" * 32}):
            r = ctx.request.post(f"{server.url}/-/console/pipelines/release/approval", form={
                **fields, "stage": "Approve", "action": "Approval", "token": token, "status": "Rejected"})
            assert r.status == 403, r.text()
        expect(stage_badge(page, "Approve")).to_have_text("InProgress")

        # Approve with a comment from the page: the rest of the pipeline turns green.
        page.get_by_label("Comment").fill("ship it")
        approve.click()
        expect(stage_badge(page, "Approve")).to_have_text("Succeeded", timeout=60_000)
        expect(stage_badge(page, "Deploy")).to_have_text("Succeeded", timeout=120_000)
        # The history and the buttons follow too, without a reload.
        expect(page.locator("table.history tbody tr").first.locator(".badge")).to_have_text("Succeeded")
        expect(page.get_by_role("button", name="Stop execution")).to_have_count(0)
        shot(page, "pipeline")
        # The build that passed: its artifact downloads through the console.
        page.locator('article.stage[data-stage="Build"] .action h3 a').click()
        expect(page.locator("#build-status")).to_have_text("SUCCEEDED")
        with page.expect_download() as dl:
            page.locator("ul a[download]").first.click()
        path = dl.value.path()
        assert pathlib.Path(path).read_bytes()[:2] == b"PK", "the artifact is the build's zip"
        approvals = server.aws("codepipeline", "list-action-executions", "--pipeline-name", "release")["actionExecutionDetails"]
        [ok] = [a for a in approvals if a["actionName"] == "Approval"]
        assert ok["status"] == "Succeeded" and ok["output"]["executionResult"]["externalExecutionSummary"] == "ship it"

        # A push while the page is open starts an execution: its revision appears live, and
        # it is stopped from the page (abandoning its approval).
        page.goto(f"{server.url}/-/console/pipelines/release")
        page.evaluate("window.__samePage = 45")
        commit = push_change(server, workdir, "v3\n")
        expect(page.locator('article.stage[data-stage="Source"] .action p.sha')).to_have_text(commit[:12], timeout=60_000)
        expect(stage_badge(page, "Approve")).to_have_text("InProgress", timeout=120_000)
        assert page.evaluate("window.__samePage") == 45, "the page was reloaded"
        page.get_by_label("abandon in-flight actions").check()
        page.get_by_role("button", name="Stop execution").click()
        expect(page.locator("table.history tbody tr").first.locator(".badge")).to_have_text("Stopped", timeout=60_000)
        page.get_by_role("link", name="Succeeded", exact=True).click()
        expect(page.locator("table.history tbody tr")).to_have_count(1)
        expect(page.locator("table.history tbody tr .badge")).to_have_text("Succeeded")

        # A transition disabled with a reason, and enabled again.
        deploy_gate = page.locator("div.transition").nth(2)
        deploy_gate.locator("summary").click()
        deploy_gate.get_by_label("Reason").fill("freeze until Monday (release train)")
        deploy_gate.get_by_role("button", name="Disable").click()
        expect(page.locator("div.transition").nth(2)).to_contain_text("Transition disabled")
        expect(page.locator("div.transition").nth(2)).to_contain_text("freeze until Monday (release train)")
        st = server.aws("codepipeline", "get-pipeline-state", "--name", "release")
        assert [x["inboundTransitionState"] for x in st["stageStates"] if x["stageName"] == "Deploy"][0]["enabled"] is False
        page.get_by_role("button", name="Enable transition").click()
        expect(page.get_by_text("Transition disabled")).to_have_count(0)

        # The pipeline's JSON: an invalid one is refused with UpdatePipeline's error in place,
        # as it was posted; nothing changes.
        version = server.aws("codepipeline", "get-pipeline", "--name", "release")["pipeline"]["version"]
        broken = json.loads(page.locator("#pipeline-json").input_value())
        del broken["artifactStore"]
        page.locator("#pipeline-json").fill(json.dumps(broken, indent=1))
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#json-error")).to_contain_text("Exception")
        assert "artifactStore" not in page.locator("#pipeline-json").input_value()
        assert server.aws("codepipeline", "get-pipeline", "--name", "release")["pipeline"]["version"] == version

        # A build started from the page: its log streams in as it is written (colours as
        # classes), and it is stopped from the page.
        slow = ("version: 0.2\nphases:\n  build:\n    commands:\n"
                "      - for i in 1 2 3 4 5 6 7 8 9 10; do printf '\\033[32mtick %s\\033[0m\\n' $i; sleep 1; done\n"
                "      - sleep 60\n")
        create_project(server, "slow", {"type": "NO_SOURCE", "buildspec": slow})
        page.goto(f"{server.url}/-/console/builds/slow")
        page.get_by_role("button", name="Start build").click()
        page.evaluate("window.__samePage = 46")
        expect(page.locator("#log")).to_contain_text("tick 3", timeout=60_000)
        expect(page.locator("#log .c2").first).to_contain_text("tick")
        expect(page.locator("#build-status")).to_have_text("IN_PROGRESS")
        assert page.evaluate("window.__samePage") == 46, "the page was reloaded"
        page.get_by_role("button", name="Stop build").click()
        expect(page.locator("#build-status")).to_have_text("STOPPED", timeout=60_000)

        # A deployment to the server's own agent: its host and lifecycle events.
        group_on_self(server, "site", "self")
        server.aws("s3api", "create-bucket", "--bucket", "bundles")
        src = workdir / "site-src"
        (src / "site").mkdir(parents=True)
        (src / "site" / "index.html").write_text("hello")
        (src / "appspec.yml").write_text(appspec(workdir / "www"))
        (src / "start.sh").write_text(f"#!/bin/sh\necho '{INJECTED} started'\n")
        (src / "start.sh").chmod(0o755)
        subprocess.run(["aws", "deploy", "push", "--application-name", "site", "--s3-location", "s3://bundles/site.zip", "--source", str(src)],
                       env=server.env(), capture_output=True, check=True)
        d = server.aws("deploy", "create-deployment", "--application-name", "site", "--deployment-group-name", "self",
                       "--s3-location", "bucket=bundles,key=site.zip,bundleType=zip")["deploymentId"]
        page.goto(f"{server.url}/-/console/deployments")
        page.get_by_role("link", name="site").click()
        page.get_by_role("link", name=d).click()
        page.evaluate("window.__samePage = 44")
        # It runs while the page is open: the page follows it to the end.
        expect(page.locator("#live .toolbar .badge")).to_have_text("Succeeded", timeout=60_000)
        assert page.evaluate("window.__samePage") == 44, "the page was reloaded"
        host = page.locator("details.host", has_text="slipway-server")
        expect(host).to_contain_text("Succeeded")
        host.locator("summary").click()
        expect(host.locator("table.events")).to_contain_text("ApplicationStart")
        expect(host.locator("table.events")).to_contain_text(f"{INJECTED} started")
        shot(page, "deployment")

        # Signing out ends the session.
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{server.url}/-/console/pipelines")
        expect(page).to_have_url(f"{server.url}/-/console/signin?next=%2F-%2Fconsole%2Fpipelines")

        assert dialogs == [], f"an injected script ran: {dialogs}"
        assert page.evaluate("window.__pwned") is None
        assert csp == [], csp
        browser.close()
