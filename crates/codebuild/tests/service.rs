//! The CodeBuild control plane against a real store: project validation and defaults, the
//! queue and leases (one holder, heartbeats, StopBuild, expiry), the queued timeout, build
//! numbers, deletion rules and the log stream.

use serde_json::{json, Value};
use slipway_codebuild::logstore::{LogBatch, LogWriter};
use slipway_codebuild::service::{CodeBuild, Heartbeat, Initiator, LogQuery};
use slipway_iam::crypto::MasterKey;
use slipway_store::{ServiceError, Store};
use std::time::Duration;

async fn service() -> (tempfile::TempDir, Store, CodeBuild) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "us-east-1").await.unwrap();
    let key = MasterKey::load_or_create(dir.path()).unwrap();
    let blobs = slipway_blobs::BlobStore::local(&dir.path().join("blobs"), key.clone()).unwrap();
    let cb = CodeBuild::new(store.clone(), blobs, key, "us-east-1", "000000000000");
    (dir, store, cb)
}

fn project(name: &str) -> Value {
    json!({
        "name": name,
        "source": {"type": "NO_SOURCE", "buildspec": "version: 0.2\nphases:\n  build:\n    commands: [true]\n"},
        "artifacts": {"type": "NO_ARTIFACTS"},
        "environment": {"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"},
        "serviceRole": "role",
    })
}

/// The user starting builds in these tests.
const T: Initiator = Initiator {
    name: "t",
    arn: "arn:aws:iam::000000000000:user/t",
};

fn code(e: ServiceError) -> &'static str {
    match e {
        ServiceError::Api { code, .. } => code,
        ServiceError::Internal(m) => panic!("internal error: {m}"),
    }
}

#[tokio::test]
async fn projects_are_validated_and_completed() {
    let (_d, _s, cb) = service().await;
    let p = cb.create_project(project("web")).await.unwrap();
    assert_eq!(
        p["arn"],
        "arn:aws:codebuild:us-east-1:000000000000:project/web"
    );
    assert_eq!(p["timeoutInMinutes"], 60);
    assert_eq!(p["queuedTimeoutInMinutes"], 480);
    assert_eq!(p["environment"]["privilegedMode"], false);
    assert_eq!(
        code(cb.create_project(project("web")).await.unwrap_err()),
        "ResourceAlreadyExistsException"
    );

    for (path, value, why) in [
        (
            "source",
            json!({"type": "GITHUB", "location": "https://github.com/a/b"}),
            "unsupported source",
        ),
        (
            "source",
            json!({"type": "NO_SOURCE"}),
            "NO_SOURCE without a buildspec",
        ),
        (
            "source",
            json!({"type": "CODECOMMIT"}),
            "CODECOMMIT without a location",
        ),
        (
            "artifacts",
            json!({"type": "S3"}),
            "S3 artifacts without a bucket",
        ),
        (
            "artifacts",
            json!({"type": "CODEPIPELINE"}),
            "CODEPIPELINE artifacts with another source",
        ),
        (
            "environment",
            json!({"type": "LINUX_CONTAINER", "image": "x"}),
            "no compute type",
        ),
    ] {
        let mut p = project("bad");
        p[path] = value;
        assert_eq!(
            code(cb.create_project(p).await.unwrap_err()),
            "InvalidInputException",
            "{why}"
        );
    }
    assert!(cb
        .batch_get_projects(&["bad".into()])
        .await
        .unwrap()
        .0
        .is_empty());

    let updated = cb
        .update_project(json!({"name": "web", "timeoutInMinutes": 10, "description": "d"}))
        .await
        .unwrap();
    assert_eq!(updated["timeoutInMinutes"], 10);
    assert_eq!(
        updated["source"]["type"], "NO_SOURCE",
        "members not given keep their values"
    );
    assert_eq!(
        code(
            cb.update_project(json!({"name": "nope"}))
                .await
                .unwrap_err()
        ),
        "ResourceNotFoundException"
    );
    cb.create_project(project("api")).await.unwrap();
    assert_eq!(
        cb.list_projects(None, true).await.unwrap(),
        vec!["api", "web"]
    );
    assert_eq!(
        cb.list_projects(Some("NAME"), false).await.unwrap(),
        vec!["web", "api"]
    );
}

#[tokio::test]
async fn the_queue_leases_each_build_once_and_ends_it_once() {
    let (_d, _s, cb) = service().await;
    cb.create_project(project("web")).await.unwrap();
    let start = |over: Value| {
        let cb = cb.clone();
        async move {
            let mut input = json!({"projectName": "web"});
            input
                .as_object_mut()
                .unwrap()
                .extend(over.as_object().unwrap().clone());
            cb.start_build(
                &input,
                &Initiator {
                    name: "tester",
                    arn: "arn:aws:iam::000000000000:user/tester",
                },
                vec![("K".into(), "v".into(), "PLAINTEXT".into())],
                vec!["s3cret".into()],
            )
            .await
            .unwrap()
        }
    };
    let b1 = start(json!({"environmentVariablesOverride": [{"name": "X", "value": "1"}]})).await;
    let b2 = start(json!({})).await;
    assert_eq!(
        (b1["buildNumber"].as_i64(), b2["buildNumber"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(b1["currentPhase"], "QUEUED");
    assert_eq!(b1["environment"]["environmentVariables"][0]["name"], "X");

    // Oldest first; each lease once.
    let l1 = cb.lease("w1", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(l1.build_id, b1["id"].as_str().unwrap());
    assert_eq!(l1.job["secrets"], json!(["s3cret"]));
    let l2 = cb.lease("w2", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(l2.build_id, b2["id"].as_str().unwrap());
    assert!(cb.lease("w3", Duration::ZERO).await.unwrap().is_none());

    // A long poll wakes when a build is queued.
    let waiter = {
        let cb = cb.clone();
        tokio::spawn(async move { cb.lease("w3", Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b3 = start(json!({})).await;
    let l3 = waiter.await.unwrap().unwrap().unwrap();
    assert_eq!(l3.build_id, b3["id"].as_str().unwrap());

    // StopBuild reaches the worker through its heartbeat; a wrong token holds nothing.
    assert_eq!(
        cb.heartbeat(&l1.build_id, &l1.token, Duration::ZERO)
            .await
            .unwrap(),
        Heartbeat::Continue
    );
    assert_eq!(
        cb.heartbeat(&l1.build_id, "forged", Duration::ZERO)
            .await
            .unwrap(),
        Heartbeat::Lost
    );
    // A beat held open answers Stop as soon as StopBuild is called, not at its end.
    let held = {
        let (cb, id, token) = (cb.clone(), l1.build_id.clone(), l1.token.clone());
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let hb = cb
                .heartbeat(&id, &token, Duration::from_secs(10))
                .await
                .unwrap();
            (hb, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cb.stop_build(&l1.build_id).await.unwrap();
    let (hb, waited) = held.await.unwrap();
    assert_eq!(hb, Heartbeat::Stop);
    assert!(
        waited < Duration::from_secs(5),
        "the held beat answered after {waited:?}"
    );
    assert_eq!(
        cb.heartbeat(&l1.build_id, &l1.token, Duration::ZERO)
            .await
            .unwrap(),
        Heartbeat::Stop
    );
    let err = cb
        .append_logs(
            &l1.build_id,
            "forged",
            None,
            LogBatch::from_lines(&[(1, "x".into())]).encode(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), "LeaseLostException");

    // Logs, phases, completion.
    cb.append_logs(
        &l1.build_id,
        &l1.token,
        None,
        LogBatch::from_lines(&[(1000, "one".into()), (2000, "two".into())]).encode(),
    )
    .await
    .unwrap();
    cb.append_logs(
        &l1.build_id,
        &l1.token,
        None,
        LogBatch::from_lines(&[(3000, "three".into())]).encode(),
    )
    .await
    .unwrap();
    let stream = l1.build_id.rsplit_once(':').unwrap().1;
    let all = cb
        .log_events(
            "/aws/codebuild/web",
            stream,
            &LogQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    let last = cb
        .log_events(
            "/aws/codebuild/web",
            stream,
            &LogQuery {
                limit: 1,
                backwards: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(last[0].message, "three");
    assert_eq!(
        code(
            cb.log_events("/aws/codebuild/web", "nope", &LogQuery::default())
                .await
                .unwrap_err()
        ),
        "ResourceNotFoundException"
    );
    cb.complete(&l1.build_id, &l1.token, &json!({"status": "STOPPED", "phases": [{"phaseType": "PROVISIONING", "phaseStatus": "SUCCEEDED"}]}))
        .await
        .unwrap();
    let (got, _) = cb
        .batch_get_builds(std::slice::from_ref(&l1.build_id))
        .await
        .unwrap();
    assert_eq!(got[0]["buildStatus"], "STOPPED");
    assert_eq!(got[0]["buildComplete"], true);
    let types: Vec<_> = got[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phaseType"].clone())
        .collect();
    assert_eq!(
        types,
        [
            json!("SUBMITTED"),
            json!("QUEUED"),
            json!("PROVISIONING"),
            json!("COMPLETED")
        ]
    );
    // Ended once: a second completion has no lease to stand on.
    assert!(cb
        .complete(&l1.build_id, &l1.token, &json!({"status": "SUCCEEDED"}))
        .await
        .is_err());

    // Deleting: finished builds go, running ones stay.
    let (deleted, refused) = cb
        .batch_delete_builds(&[l1.build_id.clone(), l2.build_id.clone(), "web:nope".into()])
        .await
        .unwrap();
    assert_eq!(deleted, vec![l1.build_id.clone()]);
    assert_eq!(
        refused.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["BUILD_IN_PROGRESS", "BUILD_NOT_FOUND"]
    );
}

#[tokio::test]
async fn expired_leases_and_queued_timeouts_end_builds() {
    let (_d, store, cb) = service().await;
    cb.create_project(project("web")).await.unwrap();
    let running = cb
        .start_build(&json!({"projectName": "web"}), &T, vec![], vec![])
        .await
        .unwrap();
    let lease = cb.lease("w1", Duration::ZERO).await.unwrap().unwrap();
    let queued = cb
        .start_build(
            &json!({"projectName": "web", "queuedTimeoutInMinutesOverride": 5}),
            &T,
            vec![],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        cb.expire_leases(slipway_store::now()).await.unwrap(),
        0,
        "nothing is due yet"
    );
    // Time passes: the worker's lease runs out, and the queued build waits past 5 minutes.
    sqlx::query("UPDATE cb_builds SET lease_expires = 0 WHERE id = $1")
        .bind(&lease.build_id)
        .execute(store.pool())
        .await
        .unwrap();
    let id = queued["id"].as_str().unwrap();
    let (docs, _) = cb.batch_get_builds(&[id.to_owned()]).await.unwrap();
    let mut doc = docs[0].clone();
    doc["startTime"] = json!(doc["startTime"].as_f64().unwrap() - 301.0);
    sqlx::query("UPDATE cb_builds SET doc = $1 WHERE id = $2")
        .bind(doc.to_string())
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        cb.expired(slipway_store::now()).await.unwrap(),
        vec![lease.build_id.clone()]
    );
    assert_eq!(cb.expire_leases(slipway_store::now()).await.unwrap(), 2);
    let (got, _) = cb
        .batch_get_builds(&[running["id"].as_str().unwrap().to_owned(), id.to_owned()])
        .await
        .unwrap();
    assert_eq!(got[0]["buildStatus"], "FAILED");
    let ctx = got[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p.get("contexts"))
        .unwrap();
    assert!(ctx[0]["message"]
        .as_str()
        .unwrap()
        .contains("stopped reporting"));
    assert_eq!(got[1]["buildStatus"], "TIMED_OUT");
    assert_eq!(
        cb.heartbeat(&lease.build_id, &lease.token, Duration::ZERO)
            .await
            .unwrap(),
        Heartbeat::Lost
    );
}

#[tokio::test]
async fn reports_groups_test_cases_coverage_and_trends() {
    let (_d, _s, cb) = service().await;
    cb.create_project(project("web")).await.unwrap();

    // Report groups: validation, duplicates, export config, listing, deletion rules.
    let g = cb
        .create_report_group(&json!({"name": "unit", "type": "TEST", "exportConfig": {"exportConfigType": "NO_EXPORT"}}))
        .await
        .unwrap();
    assert_eq!(
        g["arn"],
        "arn:aws:codebuild:us-east-1:000000000000:report-group/unit"
    );
    assert_eq!(g["status"], "ACTIVE");
    let dup = cb
        .create_report_group(&json!({"name": "unit", "type": "TEST", "exportConfig": {"exportConfigType": "NO_EXPORT"}}))
        .await;
    assert_eq!(code(dup.unwrap_err()), "ResourceAlreadyExistsException");
    for bad in [
        json!({"name": "x", "type": "NOPE", "exportConfig": {"exportConfigType": "NO_EXPORT"}}),
        json!({"name": "x", "type": "TEST", "exportConfig": {"exportConfigType": "S3"}}),
        json!({"name": "x", "type": "TEST", "exportConfig": {"exportConfigType": "FTP"}}),
    ] {
        assert_eq!(
            code(cb.create_report_group(&bad).await.unwrap_err()),
            "InvalidInputException",
            "{bad}"
        );
    }
    let missing = "arn:aws:codebuild:us-east-1:000000000000:report-group/none";
    let e = cb
        .update_report_group(&json!({"arn": missing}))
        .await
        .unwrap_err();
    assert_eq!(code(e), "ResourceNotFoundException");
    let (found, not_found) = cb
        .batch_get_report_groups(&[g["arn"].as_str().unwrap().into(), missing.into()])
        .await
        .unwrap();
    assert_eq!((found.len(), not_found), (1, vec![missing.to_owned()]));

    // Two builds upload reports: the buildspec names `unit` by ARN and `cov` by name
    // (created as web-cov), and one report whose files were not found.
    let mut report_arns = Vec::new();
    for (i, failing) in [(0, true), (1, false)] {
        let b = cb
            .start_build(&json!({"projectName": "web"}), &T, vec![], vec![])
            .await
            .unwrap();
        let l = cb.lease("w", Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(l.build_id, b["id"].as_str().unwrap());
        let cases = json!([
            {"testRawDataPath": "r.xml", "prefix": "calc.Add", "name": "adds", "status": "SUCCEEDED", "durationInNanoSeconds": 100, "testSuiteName": "s"},
            {"testRawDataPath": "r.xml", "prefix": "calc.Div", "name": "divides", "status": if failing { "FAILED" } else { "SUCCEEDED" }, "durationInNanoSeconds": 300, "message": "boom", "testSuiteName": "s"},
        ]);
        let coverage = json!([
            {"filePath": "b.rs", "linesCovered": 1, "linesMissed": 3, "lineCoveragePercentage": 25.0, "branchesCovered": 0, "branchesMissed": 0},
            {"filePath": "a.rs", "linesCovered": 9 + i, "linesMissed": 1, "lineCoveragePercentage": 90.0, "branchesCovered": 1, "branchesMissed": 1},
        ]);
        let arns = cb
            .add_reports(&l.build_id, &l.token, &[
                json!({"name": g["arn"], "type": "TEST", "files": ["r.xml"], "testCases": cases, "errors": []}),
                json!({"name": "cov", "type": "CODE_COVERAGE", "files": ["c.xml"], "codeCoverages": coverage, "errors": []}),
                json!({"name": "empty", "type": "TEST", "files": [], "testCases": [], "errors": []}),
            ])
            .await
            .unwrap();
        assert_eq!(arns.len(), 3);
        // Only the lease holder may add reports.
        let e = cb
            .add_reports(&l.build_id, "not-the-token", &[])
            .await
            .unwrap_err();
        assert_eq!(code(e), "LeaseLostException");
        let (builds, _) = cb
            .batch_get_builds(std::slice::from_ref(&l.build_id))
            .await
            .unwrap();
        assert_eq!(builds[0]["reportArns"].as_array().unwrap().len(), 3);
        report_arns.push(arns);
    }
    let (reports, _) = cb.batch_get_reports(&report_arns[0]).await.unwrap();
    let (unit, cov, empty) = (&reports[0], &reports[1], &reports[2]);
    assert_eq!(unit["status"], "FAILED");
    assert_eq!(unit["testSummary"]["total"], 2);
    assert_eq!(unit["testSummary"]["statusCounts"]["FAILED"], 1);
    assert_eq!(unit["testSummary"]["statusCounts"]["ERROR"], 0);
    assert_eq!(unit["testSummary"]["durationInNanoSeconds"], 400);
    assert_eq!(unit["reportGroupArn"], g["arn"]);
    assert!(unit["arn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:codebuild:us-east-1:000000000000:report/unit:"));
    assert_eq!(cov["type"], "CODE_COVERAGE");
    assert_eq!(cov["name"], "web-cov");
    assert_eq!(cov["codeCoverageSummary"]["linesCovered"], 10);
    assert_eq!(cov["codeCoverageSummary"]["lineCoveragePercentage"], 71.43);
    assert_eq!(empty["status"], "INCOMPLETE");
    let (second, _) = cb.batch_get_reports(&report_arns[1]).await.unwrap();
    assert_eq!(second[0]["status"], "SUCCEEDED");

    // Test cases, filtered.
    let unit_arn = unit["arn"].as_str().unwrap();
    assert_eq!(cb.test_cases(unit_arn, None, None).await.unwrap().len(), 2);
    let failed = cb.test_cases(unit_arn, Some("FAILED"), None).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["name"], "divides");
    assert_eq!(failed[0]["reportArn"], unit_arn);
    assert_eq!(
        cb.test_cases(unit_arn, None, Some("calc.Add"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        code(
            cb.test_cases(unit_arn, Some("BAD"), None)
                .await
                .unwrap_err()
        ),
        "InvalidInputException"
    );
    let cov_arn = cov["arn"].as_str().unwrap();
    assert_eq!(
        code(cb.test_cases(cov_arn, None, None).await.unwrap_err()),
        "InvalidInputException"
    );
    assert_eq!(
        code(cb.test_cases("arn:nope", None, None).await.unwrap_err()),
        "ResourceNotFoundException"
    );

    // Coverage, sorted and bounded.
    let files = |v: Vec<Value>| {
        v.iter()
            .map(|c| c["filePath"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        files(
            cb.code_coverages(cov_arn, None, true, None, None)
                .await
                .unwrap()
        ),
        ["a.rs", "b.rs"]
    );
    assert_eq!(
        files(
            cb.code_coverages(cov_arn, Some("LINE_COVERAGE_PERCENTAGE"), false, None, None)
                .await
                .unwrap()
        ),
        ["a.rs", "b.rs"]
    );
    assert_eq!(
        files(
            cb.code_coverages(cov_arn, None, true, Some(50.0), None)
                .await
                .unwrap()
        ),
        ["a.rs"]
    );

    // Listing and trends.
    let all = cb.list_reports(None, None, false).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0], report_arns[1][2], "newest first");
    let failed = cb.list_reports(None, Some("FAILED"), true).await.unwrap();
    assert_eq!(failed, vec![report_arns[0][0].clone()]);
    let of_unit = cb
        .list_reports(Some(g["arn"].as_str().unwrap()), None, true)
        .await
        .unwrap();
    assert_eq!(
        of_unit,
        vec![report_arns[0][0].clone(), report_arns[1][0].clone()]
    );
    let e = cb
        .list_reports(Some(missing), None, true)
        .await
        .unwrap_err();
    assert_eq!(code(e), "ResourceNotFoundException");
    let (stats, raw) = cb
        .report_group_trend(g["arn"].as_str().unwrap(), 100, "PASS_RATE")
        .await
        .unwrap();
    assert_eq!(stats, Some(("75".into(), "100".into(), "50".into())));
    assert_eq!(raw.len(), 2);
    let (stats, _) = cb
        .report_group_trend(g["arn"].as_str().unwrap(), 1, "DURATION")
        .await
        .unwrap();
    assert_eq!(stats.unwrap().0, "400");
    let e = cb
        .report_group_trend(g["arn"].as_str().unwrap(), 10, "SPEED")
        .await
        .unwrap_err();
    assert_eq!(code(e), "InvalidInputException");
    let groups = cb.list_report_groups(Some("NAME"), true).await.unwrap();
    assert_eq!(groups.len(), 3);
    assert!(
        groups[0].ends_with("/unit")
            && groups[1].ends_with("/web-cov")
            && groups[2].ends_with("/web-empty")
    );

    // A group with reports is deleted only with deleteReports.
    let e = cb
        .delete_report_group(g["arn"].as_str().unwrap(), false)
        .await
        .unwrap_err();
    assert_eq!(code(e), "InvalidInputException");
    cb.delete_report(&report_arns[0][0]).await.unwrap();
    cb.delete_report_group(g["arn"].as_str().unwrap(), true)
        .await
        .unwrap();
    let (found, _) = cb
        .batch_get_reports(&[report_arns[1][0].clone()])
        .await
        .unwrap();
    assert!(found.is_empty());
    assert_eq!(cb.list_report_groups(None, true).await.unwrap().len(), 2);
}

/// Logs are compressed and sealed in the database while a build runs, then archived into
/// one encrypted blob when it ends; both read the same, and no line is stored in the clear.
/// A batch whose times and lines disagree is refused.
#[tokio::test]
async fn logs_are_sealed_then_archived_into_the_blob_store() {
    let (dir, store, cb) = service().await;
    cb.create_project(project("web")).await.unwrap();
    let b = cb
        .start_build(&json!({"projectName": "web"}), &T, vec![], vec![])
        .await
        .unwrap();
    let l = cb.lease("w", Duration::ZERO).await.unwrap().unwrap();
    let marker = "plaintext-marker-7f3a";
    for bad in [
        json!({"times": [[1, 2]], "text": "only one\n"}),
        json!({"times": [[1, 1]], "text": "one\ntwo\n"}),
        json!({"times": [[1, 1]], "text": "no newline"}),
        json!({"times": "x", "text": ""}),
    ] {
        assert!(LogBatch::from_json(&bad).is_err(), "{bad}");
    }
    let ok = LogBatch::from_json(&json!({"times": [[5, 2], [6, 1]], "text": "a\n\nc\n"})).unwrap();
    assert_eq!(
        ok.lines().unwrap(),
        [(5, "a".to_owned()), (5, String::new()), (6, "c".to_owned())]
    );
    // The binary form (what workers send and chunks keep), compressed or not, round-trips
    // and is checked alike.
    assert_eq!(LogBatch::decode(&ok.encode()).unwrap(), ok);
    assert_eq!(LogBatch::decode(&ok.compress()).unwrap(), ok);
    // As compressible as a log gets (LZ4's ratio near its limit): still taken.
    let same = LogBatch::from_lines(&vec![(1, "x".repeat(99)); 20_000]);
    let packed = same.pack();
    assert!(packed.starts_with(b"SLZ\x01"));
    assert!(packed.len() * 200 < same.text.len(), "{}", packed.len());
    assert_eq!(LogBatch::decode(&packed).unwrap(), same);
    // A batch compression would hardly shrink (random base64) is packed as it is.
    let mut next = slipway_codebuild::fuzz::xorshift(0x9e37_79b9_7f4a_7c15);
    let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let noise = LogBatch::from_lines(
        &(0..2_000)
            .map(|_| {
                let line = (0..76).map(|_| b64[(next() % 64) as usize] as char);
                (1, line.collect())
            })
            .collect::<Vec<_>>(),
    );
    assert_eq!(noise.pack(), noise.encode());
    assert!(noise.compress().starts_with(b"SLZ\x01"));
    // What a worker writes (text first, times after it), plain or compressed, reads back
    // as the same batch; pieces of whole lines count as lines, a last line without its
    // newline gets one.
    let mut writer = LogWriter::default();
    writer.push_text(5, "a\n\n");
    writer.push_text(6, "c");
    assert_eq!(writer.count(), 3);
    let plain = writer.take_plain();
    assert!(plain.starts_with(b"SLB\x02"));
    assert_eq!(LogBatch::decode(&plain).unwrap(), ok);
    assert!(writer.is_empty(), "taking it starts a new batch");
    for _ in 0..2_000 {
        writer.push_text(7, "the same line again\n");
    }
    let joined = |parts: Vec<bytes::Bytes>| parts.concat();
    let packed = writer.take();
    assert_eq!(packed.len(), 1, "compressed, in one part");
    let packed = joined(packed);
    assert!(packed.starts_with(b"SLZ\x01"), "{:?}", &packed[..4]);
    let back = LogBatch::decode(&packed).unwrap();
    assert_eq!((back.count(), back.times), (2_000, vec![(7, 2_000)]));
    // Random text in a large batch: sent as it is, found so on its first part; a large
    // piece of text is sent where it lies (not copied), small ones gathered around it.
    let mut lines = noise.text.lines();
    for line in lines.by_ref().take(3) {
        writer.push_text(8, format!("{line}\n"));
    }
    let big: String = lines.by_ref().take(400).map(|l| format!("{l}\n")).collect();
    assert!(big.len() >= 16 << 10, "{}", big.len());
    let big_at = big.as_ptr();
    writer.push_text(9, big);
    for line in lines {
        writer.push_text(10, format!("{line}\n"));
    }
    let parts = writer.take();
    assert_eq!(
        parts.len(),
        5,
        "magic, small lines, the large piece, small lines, runs"
    );
    assert_eq!(
        parts[2].as_ptr(),
        big_at,
        "the large piece is sent as it came"
    );
    let plain = joined(parts);
    assert!(plain.starts_with(b"SLB\x02"));
    let back = LogBatch::decode(&plain).unwrap();
    assert_eq!(back.text, noise.text);
    assert_eq!(back.times[1], (9, 400));
    let encoded = ok.encode();
    let mut not_utf8 = encoded.clone();
    *not_utf8.last_mut().unwrap() = 0xff;
    let mut too_many_runs = encoded.clone();
    too_many_runs[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut miscounted = encoded.clone();
    miscounted[16..20].copy_from_slice(&3u32.to_le_bytes());
    let packed = ok.compress();
    let mut huge = packed.clone();
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut short = packed.clone();
    short[4..8].copy_from_slice(&(encoded.len() as u32 + 1).to_le_bytes());
    let packed_miscounted = {
        let mut b = LogBatch::decode(&miscounted[..]).unwrap_or_default();
        b.text = "x\n".into();
        b.times = vec![(1, 2)];
        b.compress()
    };
    for bad in [
        &b""[..],
        &encoded[..6],
        &encoded[..encoded.len() - 1],
        &not_utf8,
        &too_many_runs,
        &miscounted,
        br#"{"times": [[1, 1]], "text": "x\n"}"#,
        &huge,
        &short,
        &packed[..packed.len() - 2],
        &packed_miscounted,
    ] {
        assert!(LogBatch::decode(bad).is_err(), "{bad:?}");
        let e = cb
            .append_logs(
                &l.build_id,
                &l.token,
                None,
                bytes::Bytes::copy_from_slice(bad),
            )
            .await
            .unwrap_err();
        assert_eq!(code(e), "InvalidInputException");
    }
    // Batches 3 and 11 print long lines that hardly compress: large enough to be blobs of
    // their own (the rest stay in their rows until archived).
    let line = |b: i64, i: i64| {
        if b == 3 || b == 11 {
            let mut x = (b * 1_000_003 + i) as u64 | 1;
            let noise: String = (0..24)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{:08x}", x as u32)
                })
                .collect();
            format!("{marker} line {b}/{i} {noise}")
        } else {
            format!("{marker} line {b}/{i}")
        }
    };
    let mut expected = Vec::new();
    for batch in 0..20 {
        let lines: Vec<(i64, String)> = (0..500)
            .map(|i| (batch * 1000 + i, line(batch, i)))
            .collect();
        expected.extend(lines.iter().map(|l| l.1.clone()));
        // Workers send batches compressed; plain ones are taken too.
        let b = LogBatch::from_lines(&lines);
        let body = if batch % 2 == 0 {
            b.compress()
        } else {
            b.encode()
        };
        // Numbered as workers number them, or (as earlier workers sent them) not.
        let first = (batch % 3 != 0).then_some(batch * 500 + 1);
        cb.append_logs(&l.build_id, &l.token, first, body)
            .await
            .unwrap();
    }
    let own_blobs = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM cb_log_chunks WHERE chunk_blob IS NOT NULL AND packed IS NULL",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    assert_eq!(own_blobs().await, 2, "the two large chunks are blobs");
    // A chunk as the previous version sealed it (the batch's JSON) still reads.
    let legacy: Vec<(i64, String)> = (0..500)
        .map(|i| (20_000 + i, format!("{marker} line 20/{i}")))
        .collect();
    expected.extend(legacy.iter().map(|l| l.1.clone()));
    let sealed = MasterKey::load_or_create(dir.path()).unwrap().seal(
        LogBatch::from_lines(&legacy)
            .to_json()
            .to_string()
            .as_bytes(),
    );
    sqlx::query("INSERT INTO cb_log_chunks (build_id, first_seq, count, first_ts, last_ts, bytes, data, packed) VALUES ($1, 10001, 500, 20000, 20499, 0, '', $2)")
        .bind(&l.build_id)
        .bind(sealed)
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE cb_builds SET log_seq = 10500 WHERE id = $1")
        .bind(&l.build_id)
        .execute(store.pool())
        .await
        .unwrap();
    let stream = l.build_id.rsplit_once(':').unwrap().1.to_owned();
    let read = |q: LogQuery| {
        let (cb, stream) = (cb.clone(), stream.clone());
        async move {
            cb.log_events("/aws/codebuild/web", &stream, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.message))
                .collect::<Vec<_>>()
        }
    };
    let all = LogQuery {
        limit: 100_000,
        ..Default::default()
    };
    let page = LogQuery {
        after: Some(4_990),
        limit: 20,
        ..Default::default()
    };
    let tail = LogQuery {
        limit: 3,
        backwards: true,
        ..Default::default()
    };
    let timed = LogQuery {
        start: Some(7_000),
        end: Some(7_002),
        limit: 100,
        ..Default::default()
    };
    let live = (
        read(all.clone()).await,
        read(page.clone()).await,
        read(tail.clone()).await,
        read(timed.clone()).await,
    );
    assert_eq!(
        live.0.iter().map(|e| e.1.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(live.1.first().unwrap().0, 4_991);
    assert_eq!(live.1.len(), 20);
    assert_eq!(
        live.2.iter().map(|e| e.0).collect::<Vec<_>>(),
        [10_498, 10_499, 10_500]
    );
    assert_eq!(
        live.3.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        [format!("{marker} line 7/0"), format!("{marker} line 7/1")]
    );

    // A large chunk's blob whose row was never committed (the server stopped between
    // the two): removed when the finished build's log is archived, the others kept.
    let (project_name, uuid) = l.build_id.rsplit_once(':').unwrap();
    let chunk_dir = dir
        .path()
        .join(format!("blobs/codebuild/log-chunks/{project_name}/{uuid}"));
    let files = || std::fs::read_dir(&chunk_dir).unwrap().count();
    assert_eq!(files(), 2);
    std::fs::write(chunk_dir.join("orphan"), b"left by a crash").unwrap();
    cb.complete(
        &l.build_id,
        &l.token,
        &json!({"status": "SUCCEEDED", "phases": []}),
    )
    .await
    .unwrap();
    assert_eq!(cb.archive_pending().await.unwrap(), 1);
    assert_eq!(cb.archive_pending().await.unwrap(), 0, "archived once");
    assert_eq!(own_blobs().await, 2, "large chunks stay blobs of their own");
    assert!(!chunk_dir.join("orphan").exists(), "the orphan is removed");
    assert_eq!(files(), 2, "the chunks' own blobs are kept");
    let archived = (
        read(all.clone()).await,
        read(page).await,
        read(tail).await,
        read(timed).await,
    );
    assert_eq!(archived, live, "the archive reads as the live log did");

    // A master-key rotation re-wraps the archived log's key; it still reads.
    let key = MasterKey::load_or_create(dir.path()).unwrap();
    key.add_primary().unwrap();
    let rewrapped = slipway_codebuild::logstore::rewrap_logs(&store, &key)
        .await
        .unwrap();
    assert_eq!(
        rewrapped, 3,
        "the archive's key and the two large chunks' keys"
    );
    assert_eq!(read(all.clone()).await, live.0);

    // An archive as the previous version wrote it (each chunk's JSON deflated, format 0)
    // still reads.
    let mut chunks: Vec<(i64, Vec<(i64, String)>)> = (0..20)
        .map(|b| {
            let lines = (0..500).map(|i| (b * 1000 + i, line(b, i))).collect();
            (b * 500 + 1, lines)
        })
        .collect();
    chunks.push((10_001, legacy.clone()));
    let (mut blob, mut places) = (Vec::new(), Vec::new());
    for (first, lines) in &chunks {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut enc,
            LogBatch::from_lines(lines).to_json().to_string().as_bytes(),
        )
        .unwrap();
        let deflated = enc.finish().unwrap();
        places.push((*first, blob.len() as i64, deflated.len() as i64));
        blob.extend(deflated);
    }
    let path: String = sqlx::query_scalar("SELECT log_blob FROM cb_builds WHERE id = $1")
        .bind(&l.build_id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    let blobs = slipway_blobs::BlobStore::local(&dir.path().join("blobs"), key.clone()).unwrap();
    let info = blobs
        .put(
            &path,
            futures_util::stream::once(async { Ok(bytes::Bytes::from(blob)) }),
        )
        .await
        .unwrap();
    sqlx::query("UPDATE cb_builds SET log_blob_size = $1, log_blob_sha = $2, log_blob_key = $3, log_blob_format = 0 WHERE id = $4")
        .bind(info.size as i64)
        .bind(&info.sha256)
        .bind(&info.wrapped_key)
        .bind(&l.build_id)
        .execute(store.pool())
        .await
        .unwrap();
    for (first, offset, len) in places {
        sqlx::query("UPDATE cb_log_chunks SET blob_offset = $1, blob_len = $2 WHERE build_id = $3 AND first_seq = $4")
            .bind(offset)
            .bind(len)
            .bind(&l.build_id)
            .bind(first)
            .execute(store.pool())
            .await
            .unwrap();
    }
    assert_eq!(read(all).await, live.0, "a format-0 archive reads too");

    // Nothing on disk holds a line in the clear: not the database, not the blobs.
    let files = files_under(dir.path());
    let log_blobs = |files: &[std::path::PathBuf]| {
        let named = |part: &str| {
            files
                .iter()
                .filter(|f| f.to_string_lossy().contains(part))
                .count()
        };
        (named("codebuild/logs/"), named("codebuild/log-chunks/"))
    };
    assert_eq!(log_blobs(&files), (1, 2), "{files:?}");
    for f in &files {
        let data = std::fs::read(f).unwrap();
        assert!(
            !data.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds a log line in the clear",
            f.display()
        );
    }

    // Deleting the build deletes its archived log and its large chunks.
    let (deleted, _) = cb
        .batch_delete_builds(&[b["id"].as_str().unwrap().to_owned()])
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(log_blobs(&files_under(dir.path())), (0, 0));
}

fn files_under(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files
}

/// A build's git credential: minted for the lease holder, acting as the principal that
/// started the build, refused with a wrong password, and gone when the build ends.
#[tokio::test]
async fn numbered_log_batches_are_taken_in_any_order_and_read_without_gaps() {
    let (dir, store, cb) = service().await;
    cb.create_project(project("web")).await.unwrap();
    cb.start_build(&json!({"projectName": "web"}), &T, vec![], vec![])
        .await
        .unwrap();
    let l = cb.lease("w", Duration::ZERO).await.unwrap().unwrap();
    let stream = l.build_id.rsplit_once(':').unwrap().1.to_owned();
    let batch = |from: i64, n: i64| {
        // Large enough (random hex) for the middle batch to be a blob of its own.
        let width = if from == 4 { 20_000 } else { 10 };
        let mut next = slipway_codebuild::fuzz::xorshift(from as u64 + 1);
        let lines: Vec<(i64, String)> = (from..from + n)
            .map(|i| {
                let noise: String = (0..width / 8)
                    .map(|_| format!("{:08x}", next() as u32))
                    .collect();
                (i * 10, format!("line {i} {noise}"))
            })
            .collect();
        bytes::Bytes::from(LogBatch::from_lines(&lines).pack())
    };
    let read = |backwards: bool| {
        let (cb, stream) = (cb.clone(), stream.clone());
        async move {
            cb.log_events(
                "/aws/codebuild/web",
                &stream,
                &LogQuery {
                    limit: 100,
                    backwards,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
        }
    };
    let chunks = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM cb_log_chunks")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    let blobs = || async {
        let mut n = 0;
        for entry in walk(&dir.path().join("blobs")) {
            n += entry.to_string_lossy().contains("log-chunks") as usize;
        }
        n
    };
    // Lines 1-3, then 8-9 (lines 4-7 still on their way): the reader sees 1-3 only, from
    // either end, so its next token cannot pass 4-7.
    cb.append_logs(&l.build_id, &l.token, Some(1), batch(1, 3))
        .await
        .unwrap();
    cb.append_logs(&l.build_id, &l.token, Some(8), batch(8, 2))
        .await
        .unwrap();
    assert_eq!(read(false).await, [1, 2, 3]);
    assert_eq!(read(true).await, [1, 2, 3]);
    // Overlapping stored lines: refused, nothing stored.
    for (first, n) in [(3, 1), (7, 2), (9, 1), (2, 8)] {
        let e = cb
            .append_logs(&l.build_id, &l.token, Some(first), batch(first, n))
            .await
            .unwrap_err();
        assert_eq!(code(e), "InvalidInputException", "{first}+{n}");
    }
    for bad in [0, -5, i64::MAX] {
        let e = cb
            .append_logs(&l.build_id, &l.token, Some(bad), batch(1, 1))
            .await
            .unwrap_err();
        assert_eq!(code(e), "InvalidInputException", "{bad}");
    }
    assert_eq!(chunks().await, 2);
    // Lines 4-7 arrive (a blob of their own), closing the gap; sent twice (the first answer
    // lost), they are stored once and their second blob is removed.
    for _ in 0..2 {
        cb.append_logs(&l.build_id, &l.token, Some(4), batch(4, 4))
            .await
            .unwrap();
    }
    assert_eq!(chunks().await, 3);
    assert_eq!(blobs().await, 1);
    assert_eq!(read(false).await, (1..=9).collect::<Vec<_>>());
    // A later batch without a number follows the last line.
    cb.append_logs(&l.build_id, &l.token, None, batch(10, 1))
        .await
        .unwrap();
    // Lines 20-21 after a gap that never closes (their upload was lost for good): hidden
    // while the build runs, shown once it has ended.
    cb.append_logs(&l.build_id, &l.token, Some(20), batch(20, 2))
        .await
        .unwrap();
    assert_eq!(read(true).await, (1..=10).collect::<Vec<_>>());
    cb.complete(&l.build_id, &l.token, &json!({"status": "SUCCEEDED"}))
        .await
        .unwrap();
    let mut all: Vec<i64> = (1..=10).collect();
    all.extend([20, 21]);
    assert_eq!(read(false).await, all);
    assert_eq!(read(true).await, all);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn git_credentials_act_as_the_initiator_while_the_build_runs() {
    let (_dir, _store, cb) = service().await;
    cb.create_project(project("web")).await.unwrap();
    cb.start_build(&json!({"projectName": "web"}), &T, vec![], vec![])
        .await
        .unwrap();
    let l = cb.lease("w", Duration::ZERO).await.unwrap().unwrap();
    let e = cb.git_credential(&l.build_id, "forged").await.unwrap_err();
    assert_eq!(code(e), "LeaseLostException");
    let (user, password) = cb.git_credential(&l.build_id, &l.token).await.unwrap();
    assert!(user.starts_with(slipway_codebuild::service::GIT_USER_PREFIX));
    assert_eq!(password.len(), 64);
    assert_eq!(
        cb.git_principal(&user, &password).await.unwrap().as_deref(),
        Some(T.arn)
    );
    assert_eq!(cb.git_principal(&user, "wrong").await.unwrap(), None);
    assert_eq!(cb.git_principal("someone", &password).await.unwrap(), None);
    // A new credential replaces the old one.
    let (_, again) = cb.git_credential(&l.build_id, &l.token).await.unwrap();
    assert_eq!(cb.git_principal(&user, &password).await.unwrap(), None);
    assert!(cb.git_principal(&user, &again).await.unwrap().is_some());
    cb.complete(
        &l.build_id,
        &l.token,
        &json!({"status": "SUCCEEDED", "phases": []}),
    )
    .await
    .unwrap();
    assert_eq!(cb.git_principal(&user, &again).await.unwrap(), None);
}

/// Mutated log batches (what any worker may send) never panic the decoder, and what it
/// accepts is whole: its lines and times agree.
#[test]
fn mutated_log_batches_never_panic() {
    let mut next = slipway_codebuild::fuzz::xorshift(0x2545_f491_4f6c_dd1d);
    let lines: Vec<(i64, String)> = (0..40)
        .map(|i| (1_000 + i / 7, format!("line {i} \u{e9}")))
        .collect();
    let batch = LogBatch::from_lines(&lines);
    let mut writer = LogWriter::default();
    for (ts, line) in &lines {
        writer.push_text(*ts, format!("{line}\n"));
    }
    let bases = [batch.encode(), batch.compress(), writer.take_plain()];
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut b = bases[(next() % 3) as usize].clone();
        for _ in 0..(1 + next() % 3) {
            let i = (next() as usize) % b.len();
            match next() % 4 {
                0 => b[i] = next() as u8,
                1 => b[i] ^= 1 << (next() % 8),
                2 => b.truncate(i.max(1)),
                _ => {
                    let end = (i + (next() as usize) % 16).min(b.len());
                    let chunk = b[i..end].to_vec();
                    b.splice(i..i, chunk);
                }
            }
        }
        match LogBatch::decode(&b) {
            Ok(d) => {
                ok += 1;
                assert_eq!(d.lines().unwrap().len(), d.count());
            }
            Err(e) => {
                assert!(!e.is_empty());
                refused += 1;
            }
        }
    }
    assert!(ok > 100 && refused > 1000, "ok {ok}, refused {refused}");
}
