//! Report files of every format CodeBuild reads, parsed into test cases and coverage; and
//! broken or hostile files refused without a panic.

use slipway_codebuild::buildspec::ReportFormat;
use slipway_codebuild::reports::{self, FileCoverage, Parsed, TestCase};

fn tests(format: ReportFormat, text: &str) -> Vec<TestCase> {
    match reports::parse(format, text.as_bytes(), "reports/x").expect("parses") {
        Parsed::Tests(t) => t,
        Parsed::Coverage(_) => panic!("a test format gave coverage"),
    }
}

fn coverage(format: ReportFormat, text: &str) -> Vec<FileCoverage> {
    match reports::parse(format, text.as_bytes(), "reports/x").expect("parses") {
        Parsed::Coverage(c) => c,
        Parsed::Tests(_) => panic!("a coverage format gave tests"),
    }
}

fn summary(cases: &[TestCase]) -> Vec<(String, String, &'static str, i64)> {
    cases
        .iter()
        .map(|c| {
            (
                format!("{}/{}", c.suite, c.prefix),
                c.name.clone(),
                c.status,
                c.duration_ns,
            )
        })
        .collect()
}

#[test]
fn junit() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="math" tests="4">
    <testcase classname="calc.Add" name="adds" time="0.25"/>
    <testcase classname="calc.Add" name="overflows" time="1">
      <failure message="expected 3 &amp; got 4">assert 3 == 4
  at calc.rs:10</failure>
    </testcase>
    <testcase classname="calc.Div" name="by zero"><error message="panic"/></testcase>
    <testcase classname="calc.Div" name="later"><skipped/></testcase>
  </testsuite>
  <testsuite name="nested"><testsuite name="inner"><testcase name="deep" classname="n"/></testsuite></testsuite>
</testsuites>"#;
    let t = tests(ReportFormat::JunitXml, xml);
    assert_eq!(
        summary(&t),
        vec![
            (
                "math/calc.Add".into(),
                "adds".into(),
                "SUCCEEDED",
                250_000_000
            ),
            (
                "math/calc.Add".into(),
                "overflows".into(),
                "FAILED",
                1_000_000_000
            ),
            ("math/calc.Div".into(), "by zero".into(), "ERROR", 0),
            ("math/calc.Div".into(), "later".into(), "SKIPPED", 0),
            ("inner/n".into(), "deep".into(), "SUCCEEDED", 0),
        ]
    );
    assert_eq!(
        t[1].message.as_deref(),
        Some("expected 3 & got 4\nassert 3 == 4\n  at calc.rs:10")
    );
    assert_eq!(t[0].raw_path, "reports/x");
    // A lone <testsuite> root works too.
    let t = tests(
        ReportFormat::JunitXml,
        r#"<testsuite name="s"><testcase name="a" classname="C" time="x"/></testsuite>"#,
    );
    assert_eq!(
        summary(&t),
        vec![("s/C".into(), "a".into(), "SUCCEEDED", 0)]
    );
}

#[test]
fn nunit3_nunit2_testng_trx_cucumber() {
    let nunit3 = r#"<test-run><test-suite type="Assembly" fullname="a.dll">
      <test-suite type="TestFixture" fullname="Ns.Fixture">
        <test-case name="Ok" classname="Ns.Fixture" result="Passed" duration="0.5"/>
        <test-case name="Bad" classname="Ns.Fixture" result="Failed" duration="0.1"><failure><message><![CDATA[boom]]></message></failure></test-case>
        <test-case name="Err" classname="Ns.Fixture" result="Failed" label="Error"/>
        <test-case name="Skip" classname="Ns.Fixture" result="Skipped"/>
      </test-suite></test-suite></test-run>"#;
    let t = tests(ReportFormat::Nunit3Xml, nunit3);
    let statuses: Vec<_> = t.iter().map(|c| (c.name.as_str(), c.status)).collect();
    assert_eq!(
        statuses,
        vec![
            ("Ok", "SUCCEEDED"),
            ("Bad", "FAILED"),
            ("Err", "ERROR"),
            ("Skip", "SKIPPED")
        ]
    );
    assert_eq!(t[1].message.as_deref(), Some("boom"));
    assert_eq!(t[0].duration_ns, 500_000_000);

    let nunit2 = r#"<test-results><test-suite name="Fixture"><results>
        <test-case name="Ns.Fixture.Ok" executed="True" result="Success" time="0.010"/>
        <test-case name="Ns.Fixture.Bad" executed="True" result="Failure"><failure><message>no</message></failure></test-case>
        <test-case name="Ns.Fixture.Ign" executed="False" result="Ignored"/>
      </results></test-suite></test-results>"#;
    let t = tests(ReportFormat::NunitXml, nunit2);
    assert_eq!(
        summary(&t),
        vec![
            (
                "Fixture/Ns.Fixture".into(),
                "Ok".into(),
                "SUCCEEDED",
                10_000_000
            ),
            ("Fixture/Ns.Fixture".into(), "Bad".into(), "FAILED", 0),
            ("Fixture/Ns.Fixture".into(), "Ign".into(), "SKIPPED", 0),
        ]
    );

    let testng = r#"<testng-results><suite name="S"><test name="T"><class name="pkg.C">
        <test-method status="PASS" name="setUp" is-config="true" duration-ms="1"/>
        <test-method status="PASS" name="works" duration-ms="12"/>
        <test-method status="FAIL" name="breaks" duration-ms="3"><exception class="java.lang.AssertionError"><message>nope</message></exception></test-method>
        <test-method status="SKIP" name="skipped" duration-ms="0"/>
      </class></test></suite></testng-results>"#;
    let t = tests(ReportFormat::TestngXml, testng);
    assert_eq!(
        summary(&t),
        vec![
            ("S/pkg.C".into(), "works".into(), "SUCCEEDED", 12_000_000),
            ("S/pkg.C".into(), "breaks".into(), "FAILED", 3_000_000),
            ("S/pkg.C".into(), "skipped".into(), "SKIPPED", 0),
        ]
    );
    assert_eq!(
        t[1].message.as_deref(),
        Some("java.lang.AssertionError\nnope")
    );

    let trx = r#"<TestRun name="run1" xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010">
      <Results>
        <UnitTestResult testId="1" testName="Passes" outcome="Passed" duration="00:00:01.5000000"/>
        <UnitTestResult testId="2" testName="Fails" outcome="Failed" duration="00:01:00"><Output><ErrorInfo><Message>bad</Message></ErrorInfo></Output></UnitTestResult>
        <UnitTestResult testId="3" testName="NotRun" outcome="NotExecuted"/>
      </Results>
      <TestDefinitions>
        <UnitTest id="1" name="Passes"><TestMethod className="Ns.Tests" name="Passes"/></UnitTest>
        <UnitTest id="2" name="Fails"><TestMethod className="Ns.Tests" name="Fails"/></UnitTest>
      </TestDefinitions></TestRun>"#;
    let t = tests(ReportFormat::VisualStudioTrx, trx);
    assert_eq!(
        summary(&t),
        vec![
            (
                "run1/Ns.Tests".into(),
                "Passes".into(),
                "SUCCEEDED",
                1_500_000_000
            ),
            (
                "run1/Ns.Tests".into(),
                "Fails".into(),
                "FAILED",
                60_000_000_000
            ),
            ("run1/".into(), "NotRun".into(), "SKIPPED", 0),
        ]
    );

    let cucumber = r#"[{"name":"Login","uri":"features/login.feature","elements":[
        {"type":"background","name":"bg","steps":[]},
        {"type":"scenario","name":"good","steps":[{"result":{"status":"passed","duration":5}},{"result":{"status":"passed","duration":7}}]},
        {"type":"scenario","name":"bad","steps":[{"result":{"status":"passed","duration":1}},{"result":{"status":"failed","duration":2,"error_message":"oops"}},{"result":{"status":"skipped"}}]}
      ]}]"#;
    let t = tests(ReportFormat::CucumberJson, cucumber);
    assert_eq!(
        summary(&t),
        vec![
            (
                "Login/features/login.feature".into(),
                "good".into(),
                "SUCCEEDED",
                12
            ),
            (
                "Login/features/login.feature".into(),
                "bad".into(),
                "FAILED",
                3
            ),
        ]
    );
    assert_eq!(t[1].message.as_deref(), Some("oops"));
}

#[test]
fn coverage_formats() {
    let cobertura = r#"<?xml version="1.0" ?>
<!DOCTYPE coverage SYSTEM "http://cobertura.sourceforge.net/xml/coverage-04.dtd">
<coverage line-rate="0.75" branch-rate="0.5" version="1.9">
  <packages><package name="app"><classes>
    <class name="a" filename="app/a.py"><methods/><lines>
      <line number="1" hits="1"/><line number="2" hits="0"/>
      <line number="3" hits="4" branch="true" condition-coverage="50% (1/2)"/>
    </lines></class>
    <class name="a2" filename="app/a.py"><lines><line number="9" hits="2"/></lines></class>
    <class name="b" filename="app/b.py"><lines><line number="1" hits="0"/></lines></class>
  </classes></package></packages>
</coverage>"#;
    assert_eq!(
        coverage(ReportFormat::CoberturaXml, cobertura),
        vec![
            FileCoverage {
                path: "app/a.py".into(),
                lines_covered: 3,
                lines_missed: 1,
                branches_covered: 1,
                branches_missed: 1
            },
            FileCoverage {
                path: "app/b.py".into(),
                lines_covered: 0,
                lines_missed: 1,
                branches_covered: 0,
                branches_missed: 0
            },
        ]
    );

    let jacoco = r#"<report name="r"><package name="com/x">
        <class name="com/x/A" sourcefilename="A.java"><counter type="LINE" missed="99" covered="99"/></class>
        <sourcefile name="A.java"><line nr="1" mi="0" ci="3"/>
          <counter type="INSTRUCTION" missed="1" covered="9"/>
          <counter type="BRANCH" missed="1" covered="3"/>
          <counter type="LINE" missed="2" covered="8"/></sourcefile>
      </package><counter type="LINE" missed="2" covered="8"/></report>"#;
    assert_eq!(
        coverage(ReportFormat::JacocoXml, jacoco),
        vec![FileCoverage {
            path: "com/x/A.java".into(),
            lines_covered: 8,
            lines_missed: 2,
            branches_covered: 3,
            branches_missed: 1
        }]
    );

    let clover = r#"<coverage generated="1"><project><metrics statements="10"/>
        <package name="p"><file name="f.js" path="src/f.js">
          <metrics statements="10" coveredstatements="7" conditionals="4" coveredconditionals="1"/>
          <line num="1" count="1" type="stmt"/></file></package></project></coverage>"#;
    assert_eq!(
        coverage(ReportFormat::CloverXml, clover),
        vec![FileCoverage {
            path: "src/f.js".into(),
            lines_covered: 7,
            lines_missed: 3,
            branches_covered: 1,
            branches_missed: 3
        }]
    );

    let simplecov_json = r#"{"files":[{"filename":"/app/lib/a.rb","coverage":[null,1,0,2,null]}]}"#;
    assert_eq!(
        coverage(ReportFormat::SimpleCov, simplecov_json),
        vec![FileCoverage {
            path: "/app/lib/a.rb".into(),
            lines_covered: 2,
            lines_missed: 1,
            branches_covered: 0,
            branches_missed: 0
        }]
    );
    let resultset = r#"{"RSpec":{"coverage":{"/app/b.rb":{"lines":[1,0,null],"branches":{"[:if, 0, 1]":{"[:then, 1]":3,"[:else, 2]":0}}}},"timestamp":1}}"#;
    assert_eq!(
        coverage(ReportFormat::SimpleCov, resultset),
        vec![FileCoverage {
            path: "/app/b.rb".into(),
            lines_covered: 1,
            lines_missed: 1,
            branches_covered: 1,
            branches_missed: 1
        }]
    );
    assert_eq!(reports::percent(1, 2), 33.33);
    assert_eq!(reports::percent(0, 0), 0.0);
}

#[test]
fn broken_files_are_errors_naming_the_file() {
    for (format, text) in [
        (ReportFormat::JunitXml, "<testsuite><testcase></testsuite>"),
        (ReportFormat::JunitXml, "not xml at all <"),
        (ReportFormat::JunitXml, ""),
        (ReportFormat::CoberturaXml, "<a/><b/>"),
        (ReportFormat::CucumberJson, "[{"),
        (ReportFormat::SimpleCov, "nope"),
    ] {
        let e = reports::parse(format, text.as_bytes(), "out/r.xml").unwrap_err();
        assert!(e.starts_with("out/r.xml: not a valid"), "{e}");
    }
    // Deep nesting is refused, not recursed into.
    let deep = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
    assert!(reports::parse(ReportFormat::JunitXml, deep.as_bytes(), "d").is_err());
    // Entities other than XML's own are never expanded (no entity bombs): refused.
    let bomb = r#"<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><testsuite name="&b;"><testcase name="t"/></testsuite>"#;
    let e = reports::parse(ReportFormat::JunitXml, bomb.as_bytes(), "b").unwrap_err();
    assert!(e.contains("entity"), "{e}");
}

#[test]
fn truncation_keeps_failures_first() {
    let case = |i: usize, status: &'static str| TestCase {
        suite: "s".into(),
        prefix: "p".into(),
        name: format!("t{i}"),
        status,
        duration_ns: 0,
        message: None,
        raw_path: "r".into(),
    };
    let mut cases: Vec<TestCase> = (0..600).map(|i| case(i, "SUCCEEDED")).collect();
    cases.push(case(600, "FAILED"));
    cases.push(case(601, "ERROR"));
    assert!(reports::truncate(&mut cases));
    assert_eq!(cases.len(), reports::MAX_TEST_CASES);
    assert_eq!(cases[0].name, "t600");
    assert_eq!(cases[1].name, "t601");
    let mut few = vec![case(0, "SUCCEEDED")];
    assert!(!reports::truncate(&mut few));
}

/// Random byte flips of valid files: every format answers Ok or Err, never panics.
#[test]
fn mutated_files_never_panic() {
    let seeds: [(ReportFormat, &str); 4] = [
        (
            ReportFormat::JunitXml,
            r#"<testsuites><testsuite name="a"><testcase classname="c" name="n" time="1.5"><failure message="m">t</failure></testcase></testsuite></testsuites>"#,
        ),
        (
            ReportFormat::CoberturaXml,
            r#"<coverage><packages><package><classes><class filename="f"><lines><line number="1" hits="1" condition-coverage="50% (1/2)"/></lines></class></classes></package></packages></coverage>"#,
        ),
        (
            ReportFormat::VisualStudioTrx,
            r#"<TestRun><Results><UnitTestResult testId="1" testName="x" outcome="Passed" duration="00:00:01"/></Results></TestRun>"#,
        ),
        (
            ReportFormat::CucumberJson,
            r#"[{"name":"f","elements":[{"name":"s","steps":[{"result":{"status":"failed","duration":3}}]}]}]"#,
        ),
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"<>/=\"'&;#x![]{}:, abc0123456789-.";
    for (format, seed) in seeds {
        for _ in 0..1500 {
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let _ = reports::parse(format, &bytes, "f");
        }
    }
}
