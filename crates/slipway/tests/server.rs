//! The `slipway server` process from the outside: start-up, credentials, health, errors,
//! graceful shutdown and restart, on port 0 with a fresh data directory per test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts the binary on port 0 and waits for the address it prints.
    fn start(data: &Path, env: &[(&str, &str)]) -> (Server, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.args(["server", "--data-dir"])
            .arg(data)
            .args(["--listen", "127.0.0.1:0"]);
        cmd.env_remove("SLIPWAY_ROOT_ACCESS_KEY_ID")
            .env_remove("SLIPWAY_ROOT_SECRET_ACCESS_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn slipway");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut printed = String::new();
        let addr = loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "server exited early; printed:\n{printed}"
            );
            printed.push_str(&line);
            if let Some(a) = line.trim().strip_prefix("Slipway listening on http://") {
                break a.to_owned();
            }
        };
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        (Server { child, addr }, printed)
    }

    fn request(&self, raw: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        read_response(&mut s)
    }

    fn terminate(&mut self) -> i32 {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn post(target: &str, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn generates_root_credentials_once_and_answers_health() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, printed) = Server::start(dir.path(), &[]);
    assert!(
        printed.contains("aws_secret_access_key = "),
        "first start prints the generated credentials"
    );
    let file = dir.path().join("root-credentials");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("[default]\naws_access_key_id = AKIA"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let (status, body) =
        s.request("GET /-/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.terminate(), 0);

    let (mut again, printed) = Server::start(dir.path(), &[]);
    assert!(
        !printed.contains("aws_secret_access_key"),
        "credentials are printed only when generated"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert_eq!(again.terminate(), 0);
}

#[test]
fn root_credentials_from_environment_and_aws_errors() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SLIPWAY_ROOT_ACCESS_KEY_ID", "AKIAENVENVENVENVENV0"),
        ("SLIPWAY_ROOT_SECRET_ACCESS_KEY", "s"),
    ];
    let (mut s, printed) = Server::start(dir.path(), &env);
    assert!(!printed.contains("aws_secret_access_key"));
    assert!(!dir.path().join("root-credentials").exists());

    let (status, body) = s.request(&post("CodeCommit_20150413.ListRepositories", "{}"));
    assert_eq!(status, 403);
    assert!(
        body.contains("\"__type\":\"MissingAuthenticationTokenException\""),
        "{body}"
    );
    assert!(
        body.to_ascii_lowercase().contains("x-amzn-requestid: "),
        "{body}"
    );

    let bad = "AWS4-HMAC-SHA256 Credential=AKIAENVENVENVENVENV0/20260101/us-east-1/codecommit/aws4_request, SignedHeaders=host, Signature=zz";
    let raw = post("CodeCommit_20150413.ListRepositories", "{}").replacen(
        "Host: x\r\n",
        &format!("Host: x\r\nAuthorization: {bad}\r\n"),
        1,
    );
    let (status, body) = s.request(&raw);
    assert_eq!(status, 403);
    assert!(body.contains("IncompleteSignatureException"), "{body}");

    // Other paths are S3's: its XML errors.
    let (status, body) =
        s.request("GET /no/such/path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 400);
    assert!(body.contains("<Code>InvalidBucketName</Code>"), "{body}");
    let (status, body) =
        s.request("GET /some-bucket/key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 403);
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    assert_eq!(s.terminate(), 0);
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), &[]);
    // Start a request whose body has not fully arrived, then ask the server to stop.
    let body = "{}".repeat(1000);
    let raw = post("CodeCommit_20150413.ListRepositories", &body);
    let (head, tail) = raw.split_at(raw.len() - 10);
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .arg("-TERM")
        .arg(s.child.id().to_string())
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "server must wait for the request in flight"
    );
    conn.write_all(tail.as_bytes()).unwrap();
    let (status, text) = read_response(&mut conn);
    assert_eq!(
        status, 403,
        "the in-flight request got its (unsigned) answer: {text}"
    );
    assert_eq!(s.terminate(), 0);
    // No new connections are accepted after shutdown.
    assert!(TcpStream::connect(&s.addr).is_err());
}

#[test]
fn slow_header_senders_are_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), &[("SLIPWAY_HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"GET /-/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = Vec::new();
    // The server closes the connection (possibly after a 408) instead of waiting forever.
    let n = conn
        .read_to_end(&mut buf)
        .expect("the server closes the connection");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Other clients are served meanwhile and afterwards.
    let (status, _) = s.request("GET /-/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert_eq!(s.terminate(), 0);
}
