//! Never-panics fuzzing of every parser of untrusted input, run as an ordinary test: seeded
//! mutation of valid examples plus random bytes, deterministic so a failure reproduces.
//! (cargo-fuzz needs a nightly toolchain, which this project's machines do not have.)

use slipway_api::sigv4;
use slipway_codecommit::files::normalize_path;
use slipway_codecommit::refs::RefUpdate;
use slipway_iam::policy::Policy;
use slipway_model::{
    codebuild, codecommit, codedeploy, codepipeline, ssm, ApiError, Context, Principal,
};

/// xorshift64*: small, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"",
    b"\0",
    b"%",
    b"%zz",
    b"%F0%9F",
    b"..",
    b"/",
    b"\\",
    b"\xff\xfe",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"&",
    b"*",
    b"?",
    b"null",
    b"-1",
    b"1e999",
    b"\n",
    b"\r\n",
    b" ",
];

/// A mutated copy of one of `seeds`, or random bytes.
fn input(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    if rng.below(8) == 0 {
        return (0..rng.below(64)).map(|_| rng.next() as u8).collect();
    }
    let mut data = seeds[rng.below(seeds.len())].to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, rng.next() as u8),
            2 if at < data.len() => {
                data.remove(at);
            }
            3 => data.truncate(at),
            4 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                data.splice(at..at, piece.iter().copied());
            }
            _ => {
                let end = (at + rng.below(16)).min(data.len());
                let chunk = data[at..end].to_vec();
                data.splice(at..at, chunk);
            }
        }
    }
    data
}

fn run(seeds: &[&[u8]], iterations: usize, mut f: impl FnMut(&[u8])) {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for seed in seeds {
        f(seed);
    }
    for _ in 0..iterations {
        f(&input(&mut rng, seeds));
    }
}

#[test]
fn sigv4_authorization_header() {
    let seeds: &[&[u8]] = &[
        b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        b"AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request,SignedHeaders=host,Signature=",
    ];
    run(seeds, 50_000, |b| {
        let _ = sigv4::parse_authorization(&String::from_utf8_lossy(b));
    });
}

#[test]
fn sigv4_canonicalisation_and_dates() {
    let seeds: &[&[u8]] = &[
        b"a=1&b=%20x&c",
        b"/v1/repos/x%2Fy",
        b"20150830T123600Z",
        b"20261122T002103Z1b01da20a13f1a480f2560100c6ccfdae6060ef02324e1c6d01bd6edeb5682f8",
    ];
    run(seeds, 50_000, |b| {
        let s = String::from_utf8_lossy(b);
        let _ = sigv4::canonical_query(&s);
        let _ = sigv4::percent_decode(&s, true);
        let _ = sigv4::canonical_uri(&s, true);
        let _ = sigv4::check_skew(&s, 1_440_000_000);
        let _ = sigv4::verify_git_password(
            "secret",
            &s,
            "/v1/repos/x",
            "127.0.0.1",
            "us-east-1",
            1_795_306_863,
        );
    });
}

#[test]
fn iam_policy_documents() {
    let seeds: &[&[u8]] = &[
        br#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["codecommit:Git*"],"Resource":"arn:aws:codecommit:*:*:r?po"}]}"#,
        br#"{"Statement":{"Effect":"Deny","NotAction":"x","NotResource":["*"],"Condition":{}}}"#,
    ];
    run(seeds, 30_000, |b| {
        if let Ok(p) = Policy::parse(&String::from_utf8_lossy(b)) {
            let _ = slipway_iam::policy::evaluate(
                &[p],
                "codecommit:GitPull",
                "arn:aws:codecommit:us-east-1:0:repo",
            );
        }
    });
}

#[test]
fn repository_paths_and_hook_lines() {
    let seeds: &[&[u8]] = &[
        b"/a/b/c.txt",
        b"dir/../x",
        b"0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/main\n",
    ];
    run(seeds, 50_000, |b| {
        let s = String::from_utf8_lossy(b);
        if let Ok(p) = normalize_path(&s, true) {
            assert!(!p.split('/').any(|c| c == ".." || c == "."), "{p}");
        }
        let _ = RefUpdate::parse_lines(&s);
    });
}

struct Unbuilt;
impl codecommit::CodeCommitApi for Unbuilt {}
impl codebuild::CodeBuildApi for Unbuilt {}
impl codepipeline::CodePipelineApi for Unbuilt {}
impl codedeploy::CodeDeployApi for Unbuilt {}
impl ssm::SSMApi for Unbuilt {}

#[tokio::test]
async fn generated_decoding_and_validation() {
    let ctx = Context {
        request_id: "r".into(),
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
        principal: Principal {
            arn: "arn:aws:iam::000000000000:root".into(),
            access_key_id: "A".into(),
            user_name: None,
        },
    };
    let seeds: &[&[u8]] = &[
        br#"{"repositoryName":"r","putFiles":[{"filePath":"a","fileContent":"aGk=","fileMode":"NORMAL"}],"tags":{"k":"v"}}"#,
        br#"{"pipeline":{"name":"p","stages":[{"name":"s","actions":[{"name":"a","actionTypeId":{"category":"Source"}}]}]}}"#,
        br#"{"Name":"/a/b","Value":"v","Type":"SecureString","Tags":[{"Key":"k","Value":"v"}],"ParameterFilters":[{"Key":"Path","Option":"Recursive","Values":["/"]}]}"#,
        br#"{"projectName":"p","environmentVariablesOverride":[{"name":"A","value":"b","type":"PLAINTEXT"}],"timeoutInMinutesOverride":-5}"#,
    ];
    let mut inputs = Vec::new();
    run(seeds, 4_000, |b| inputs.push(b.to_vec()));
    for (i, b) in inputs.iter().enumerate() {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(b) else {
            continue;
        };
        for (service, ops) in [
            ("codecommit", codecommit::OPERATIONS),
            ("codebuild", codebuild::OPERATIONS),
            ("codepipeline", codepipeline::OPERATIONS),
            ("codedeploy", codedeploy::OPERATIONS),
            ("ssm", ssm::OPERATIONS),
        ] {
            let op = ops[i % ops.len()];
            let r: Result<Vec<u8>, ApiError> = match service {
                "codecommit" => codecommit::dispatch(&Unbuilt, &ctx, op, value.clone()).await,
                "codebuild" => codebuild::dispatch(&Unbuilt, &ctx, op, value.clone()).await,
                "codepipeline" => codepipeline::dispatch(&Unbuilt, &ctx, op, value.clone()).await,
                "ssm" => ssm::dispatch(&Unbuilt, &ctx, op, value.clone()).await,
                _ => codedeploy::dispatch(&Unbuilt, &ctx, op, value.clone()).await,
            };
            let e = r.expect_err("nothing is implemented by Unbuilt");
            assert!(matches!(e.status, 400 | 501), "{service}.{op}: {e}");
        }
    }
}

/// Random requests through the S3 service (`s3s` parsing and Slipway's handlers, without
/// signatures): mutated request lines, headers and bodies of every built operation must
/// never panic and never answer 500.
#[tokio::test]
async fn s3_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = slipway_store::Store::open(dir.path(), "us-east-1")
        .await
        .unwrap();
    let key = slipway_iam::crypto::MasterKey::from_hex(&"ab".repeat(32)).unwrap();
    let blobs = slipway_blobs::BlobStore::local(&dir.path().join("blobs"), key).unwrap();
    let s3 = slipway_s3::S3Store::new(store, blobs, "us-east-1", "000000000000");
    let service =
        s3s::service::S3ServiceBuilder::new(slipway_s3::service::SlipwayS3 { store: s3.clone() })
            .build();
    s3.create_bucket("fuzz", None, "us-east-1").await.unwrap();
    // "METHOD target\nheader: value\n\nbody"
    let seeds: &[&[u8]] = &[
        b"PUT /fuzz/a/b.txt\ncontent-md5: 1B2M2Y8AsgTpgAEAAAAAAA==\nx-amz-meta-k: v\nx-amz-tagging: a=b&c=d\n\nhello",
        b"GET /fuzz/a/b.txt\nrange: bytes=1-3\nif-none-match: \"x\"\n\n",
        b"HEAD /fuzz/a/b.txt?versionId=null&partNumber=1\n\n",
        b"GET /fuzz?list-type=2&prefix=a/&delimiter=/&max-keys=1&continuation-token=YQ==&encoding-type=url\n\n",
        b"GET /fuzz?versions&key-marker=a&version-id-marker=null&max-keys=2\n\n",
        b"GET /fuzz?marker=a&max-keys=-1\n\n",
        b"POST /fuzz?delete\n\n<Delete><Quiet>true</Quiet><Object><Key>a/b.txt</Key><VersionId>null</VersionId></Object></Delete>",
        b"PUT /fuzz?versioning\n\n<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
        b"PUT /fuzz/a/b.txt?tagging\n\n<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>",
        b"POST /fuzz/m?uploads\nx-amz-meta-z: 1\n\n",
        b"PUT /fuzz/m?partNumber=1&uploadId=abc\n\npart",
        b"POST /fuzz/m?uploadId=abc\n\n<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag></Part></CompleteMultipartUpload>",
        b"GET /fuzz/m?uploadId=abc&max-parts=1&part-number-marker=0\n\n",
        b"PUT /fuzz/c\nx-amz-copy-source: fuzz/a/b.txt?versionId=null\nx-amz-metadata-directive: REPLACE\n\n",
        b"PUT /other\n\n<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>",
        b"DELETE /fuzz/a/b.txt?versionId=0123456789abcdef0123456789abcdef\n\n",
        b"GET /\n\n",
    ];
    let mut requests = Vec::new();
    run(seeds, 3_000, |b| requests.push(b.to_vec()));
    let mut succeeded = 0;
    for raw in requests {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let Some((method, target)) = lines.next().and_then(|l| l.split_once(' ')) else {
            continue;
        };
        let mut req = http::Request::builder().method(method).uri(target);
        for line in lines {
            if let Some((k, v)) = line.split_once(": ") {
                req = req.header(k, v);
            }
        }
        let Ok(req) = req.body(s3s::Body::from(body.to_owned())) else {
            continue;
        };
        match service.call(req).await {
            Ok(resp) => {
                assert!(resp.status() != 500, "500 for {text:?}");
                succeeded += usize::from(resp.status().is_success());
            }
            Err(e) => panic!("service error for {text:?}: {e:?}"),
        }
    }
    // The mutations must still reach the handlers, not only the parser's error paths.
    assert!(succeeded > 300, "only {succeeded} requests succeeded");
}
