//! The buildspec parser: every key of version 0.2 parsed and checked, errors naming key and
//! line, and a mutation fuzz loop that must never panic.

use slipway_codebuild::buildspec::{self, OnFailure, ReportFormat, Version};

const FULL: &str = r#"version: 0.2
run-as: builder
env:
  shell: bash
  variables:
    GREETING: "hello world"
    NUMBER: 42
    EMPTY:
  parameter-store:
    DB_PASSWORD: /prod/db/password
  secrets-manager:
    TOKEN: my-secret:token:AWSCURRENT
  exported-variables:
    - GREETING
    - BUILT_AT
  git-credential-helper: yes
proxy:
  upload-artifacts: no
  logs: yes
batch:
  fast-fail: false
phases:
  install:
    run-as: root
    on-failure: CONTINUE
    runtime-versions:
      python: 3.11
      nodejs: 20
    commands:
      - echo install
  pre_build:
    on-failure: RETRY-2-timeout.*
    commands: echo one command
  build:
    commands:
      - echo build
      - |
        for i in 1 2; do
          echo $i
        done
    finally:
      - echo finally
  post_build:
    on-failure: ABORT
    commands:
      - export BUILT_AT=$(date +%s)
reports:
  unit-tests:
    files:
      - "**/*.xml"
    base-directory: target/reports
    discard-paths: no
    file-format: JUNITXML
  arn:aws:codebuild:us-east-1:000000000000:report-group/coverage:
    files: coverage.xml
    file-format: COBERTURAXML
artifacts:
  files:
    - "**/*"
  name: app-$(date +%Y)
  discard-paths: yes
  base-directory: dist
  exclude-paths:
    - "**/*.tmp"
  enable-symlinks: yes
  s3-prefix: builds
  secondary-artifacts:
    docs:
      files: ["docs/**/*"]
      name: docs
cache:
  key: deps-$(cat lockfile)
  fallback-keys:
    - deps-
  action: restore
  paths:
    - "/root/.cache/**/*"
"#;

#[test]
fn every_key_of_a_full_buildspec() {
    let s = buildspec::parse(FULL).unwrap();
    assert_eq!(s.version, Version::V02);
    assert_eq!(s.run_as.as_deref(), Some("builder"));
    assert_eq!(s.env.shell.as_deref(), Some("bash"));
    assert_eq!(
        s.env.variables,
        vec![
            ("GREETING".into(), "hello world".into()),
            ("NUMBER".into(), "42".into()),
            ("EMPTY".into(), String::new()),
        ]
    );
    assert_eq!(
        s.env.parameter_store,
        vec![("DB_PASSWORD".into(), "/prod/db/password".into())]
    );
    assert_eq!(
        s.env.secrets_manager,
        vec![("TOKEN".into(), "my-secret:token:AWSCURRENT".into())]
    );
    assert_eq!(s.env.exported_variables, vec!["GREETING", "BUILT_AT"]);
    assert!(s.env.git_credential_helper);
    assert!(!s.proxy.upload_artifacts && s.proxy.logs);
    assert!(s.batch);

    let install = s.phases.install.as_ref().unwrap();
    assert_eq!(install.run_as.as_deref(), Some("root"));
    assert_eq!(install.on_failure, OnFailure::Continue);
    assert_eq!(
        install.runtime_versions,
        vec![
            ("python".into(), "3.11".into()),
            ("nodejs".into(), "20".into())
        ]
    );
    assert_eq!(install.commands[0].text, "echo install");
    assert_eq!(install.commands[0].line, 30);
    let pre = s.phases.pre_build.as_ref().unwrap();
    assert_eq!(
        pre.on_failure,
        OnFailure::Retry {
            count: 2,
            pattern: Some("timeout.*".into())
        }
    );
    assert_eq!(pre.commands.len(), 1, "a single string is a list of one");
    let build = s.phases.build.as_ref().unwrap();
    assert_eq!(build.commands.len(), 2);
    assert_eq!(
        build.commands[1].text,
        "for i in 1 2; do\n  echo $i\ndone\n"
    );
    assert_eq!(build.finally[0].text, "echo finally");
    let post = s.phases.post_build.as_ref().unwrap();
    assert_eq!(post.on_failure, OnFailure::Abort);
    let order: Vec<_> = s
        .phases
        .in_order()
        .iter()
        .map(|(n, p)| (*n, p.is_some()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("INSTALL", true),
            ("PRE_BUILD", true),
            ("BUILD", true),
            ("POST_BUILD", true)
        ]
    );

    assert_eq!(s.reports.len(), 2);
    let (name, unit) = &s.reports[0];
    assert_eq!(name, "unit-tests");
    assert_eq!(unit.files, vec!["**/*.xml"]);
    assert_eq!(unit.base_directory.as_deref(), Some("target/reports"));
    assert!(!unit.discard_paths);
    assert_eq!(unit.file_format, ReportFormat::JunitXml);
    assert!(unit.file_format.is_test());
    let (arn, cov) = &s.reports[1];
    assert!(arn.starts_with("arn:aws:codebuild:"));
    assert_eq!(cov.file_format, ReportFormat::CoberturaXml);
    assert!(!cov.file_format.is_test());

    let a = s.artifacts.as_ref().unwrap();
    assert_eq!(a.primary.files, vec!["**/*"]);
    assert_eq!(a.primary.name.as_deref(), Some("app-$(date +%Y)"));
    assert!(a.primary.discard_paths && a.primary.enable_symlinks);
    assert_eq!(a.primary.base_directory.as_deref(), Some("dist"));
    assert_eq!(a.primary.exclude_paths, vec!["**/*.tmp"]);
    assert_eq!(a.primary.s3_prefix.as_deref(), Some("builds"));
    assert_eq!(a.secondary.len(), 1);
    assert_eq!(a.secondary[0].0, "docs");
    assert_eq!(a.secondary[0].1.files, vec!["docs/**/*"]);

    let c = s.cache.as_ref().unwrap();
    assert_eq!(c.key.as_deref(), Some("deps-$(cat lockfile)"));
    assert_eq!(c.fallback_keys, vec!["deps-"]);
    assert_eq!(c.action.as_deref(), Some("restore"));
    assert_eq!(c.paths, vec!["/root/.cache/**/*"]);
}

#[test]
fn minimal_and_version_01() {
    let s =
        buildspec::parse("version: 0.1\nphases:\n  build:\n    commands:\n      - make\n").unwrap();
    assert_eq!(s.version, Version::V01);
    assert!(s.phases.install.is_none());
    assert_eq!(s.phases.build.unwrap().commands[0].text, "make");
    // Empty sections are allowed.
    let s = buildspec::parse("version: 0.2\nenv:\nphases:\n  build:\n").unwrap();
    assert!(s.phases.build.unwrap().commands.is_empty());
}

#[test]
fn errors_name_the_key_and_the_line() {
    let cases: &[(&str, &str, usize)] = &[
        ("phases:\n  build:\n    commands: [ls]\n", "no version", 1),
        ("version: 0.3\n", "Invalid buildspec version \"0.3\"", 1),
        (
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo ok\n      - key: value\n",
            "Expected phases.build.commands[1] to be of string type: found a mapping",
            6,
        ),
        (
            "version: 0.2\nphases:\n  biuld:\n    commands: [ls]\n",
            "Unknown key phases.biuld",
            3,
        ),
        ("version: 0.2\nfoo: bar\n", "Unknown key foo", 2),
        (
            "version: 0.2\nphases:\n  build:\n    on-failure: IGNORE\n",
            "Invalid phases.build.on-failure \"IGNORE\"",
            4,
        ),
        (
            "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-(\n",
            "Invalid regular expression",
            4,
        ),
        (
            "version: 0.2\nenv:\n  variables:\n    - A=1\n",
            "Expected env.variables to be a mapping",
            4,
        ),
        (
            "version: 0.2\nenv:\n  git-credential-helper: maybe\n",
            "Expected env.git-credential-helper to be yes or no",
            3,
        ),
        (
            "version: 0.2\nreports:\n  r:\n    files: [a.xml]\n    file-format: XUNIT\n",
            "Invalid reports.r.file-format \"XUNIT\"",
            5,
        ),
        (
            "version: 0.2\nreports:\n  r:\n    base-directory: x\n",
            "reports.r needs files",
            4,
        ),
        (
            "version: 0.2\nartifacts:\n  name: x\n",
            "artifacts needs files",
            3,
        ),
        (
            "version: 0.2\ncache:\n  action: both\n",
            "Invalid cache.action \"both\"",
            3,
        ),
        (
            "version: 0.2\nphases:\n  build:\n    commands: [ls\n",
            "Invalid YAML",
            5,
        ),
        (
            "version: 0.2\nversion: 0.1\n",
            "Duplicate key \"version\"",
            2,
        ),
        ("- just\n- a list\n", "must be a YAML mapping", 1),
        ("version: 0.2\nx: &a 1\ny: *a\n", "anchors", 2),
    ];
    for (text, want, line) in cases {
        let e = buildspec::parse(text).expect_err(text);
        assert!(
            e.message.contains(want),
            "{text:?}: got {:?}, want {want:?}",
            e.message
        );
        assert_eq!(e.line, *line, "{text:?}: {e}");
        assert!(e.to_string().ends_with(&format!("at line {line}")));
    }
}

/// Mutates the full buildspec (byte flips, deletions, duplications, insertions of YAML
/// punctuation) and parses each result: the parser may refuse, never panic.
#[test]
fn fuzz_never_panics() {
    let mut next = slipway_codebuild::fuzz::xorshift(0x2545_f491_4f6c_dd1d);
    let base = FULL.as_bytes();
    let punct = b":-[]{}&*!|>'\"#%@` \n\t";
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..4000 {
        let mut b = base.to_vec();
        for _ in 0..(1 + next() % 4) {
            if b.is_empty() {
                break;
            }
            let i = (next() as usize) % b.len();
            match next() % 4 {
                0 => b[i] = punct[(next() as usize) % punct.len()],
                1 => {
                    let end = (i + (next() as usize) % 40).min(b.len());
                    b.drain(i..end);
                }
                2 => {
                    let end = (i + (next() as usize) % 40).min(b.len());
                    let chunk = b[i..end].to_vec();
                    b.splice(i..i, chunk);
                }
                _ => b.insert(i, punct[(next() as usize) % punct.len()]),
            }
        }
        let text = String::from_utf8_lossy(&b);
        match buildspec::parse(&text) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.message.is_empty());
                refused += 1;
            }
        }
    }
    // The mutations must exercise both sides.
    assert!(ok > 100 && refused > 100, "ok {ok}, refused {refused}");
}
