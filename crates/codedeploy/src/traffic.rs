//! Traffic: the load balancers a deployment group's target groups name, and moving hosts in
//! and out of them (AllowTraffic, BlockTraffic). A target group is a block of a real HAProxy
//! or nginx configuration between `# slipway:servers NAME begin` and `# slipway:servers NAME
//! end`, rewritten with the hosts that receive traffic (each host's address is its
//! `slipway:address` tag), checked, and reloaded gracefully with the configured command.
//! The set of hosts of each target group is kept in `cd_traffic`; the service itself is the
//! "host" its traffic events are queued for ([`TRAFFIC_HOST`]).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The host identifier traffic events are queued under (the service performs them).
pub const TRAFFIC_HOST: &str = "slipway:traffic";

/// The instance tag holding a host's `address:port` behind a load balancer.
pub const ADDRESS_TAG: &str = "slipway:address";

/// One load balancer (the `--load-balancers` file maps target group names to these).
#[derive(Debug, Clone, Deserialize)]
pub struct LoadBalancer {
    /// `haproxy` or `nginx`: how a server line is written.
    pub kind: String,
    /// The configuration file holding the target group's marked block.
    pub config: PathBuf,
    /// The command that checks the new configuration (optional), argv form.
    #[serde(default)]
    pub check: Vec<String>,
    /// The command that reloads it gracefully, argv form.
    pub reload: Vec<String>,
}

/// The load balancers this server moves traffic on, by target group name.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub groups: BTreeMap<String, LoadBalancer>,
}

impl Traffic {
    /// Reads a JSON file `{"NAME": {"kind": …, "config": …, "check": […], "reload": […]}}`.
    pub fn from_file(path: &std::path::Path) -> Result<Traffic, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let groups: BTreeMap<String, LoadBalancer> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for (name, lb) in &groups {
            if !matches!(lb.kind.as_str(), "haproxy" | "nginx") {
                return Err(format!(
                    "target group {name}: kind must be haproxy or nginx"
                ));
            }
            if lb.reload.is_empty() {
                return Err(format!("target group {name}: a reload command is required"));
            }
        }
        Ok(Traffic { groups })
    }

    /// Points target group `name` at `servers` ((instance, address) pairs): the marked block
    /// rewritten, the configuration checked (the old one put back if it fails), reloaded.
    pub async fn apply(&self, name: &str, servers: &[(String, String)]) -> Result<(), String> {
        let lb = self.groups.get(name).ok_or_else(|| {
            format!(
                "No load balancer serves target group {name} in this server (see --load-balancers)"
            )
        })?;
        let old = tokio::fs::read_to_string(&lb.config)
            .await
            .map_err(|e| format!("reading {}: {e}", lb.config.display()))?;
        let out = rewrite(&old, name, &lb.kind, servers).ok_or_else(|| {
            format!(
                "{} has no '# slipway:servers {name} begin' line",
                lb.config.display()
            )
        })?;
        write_atomic(&lb.config, &out).await?;
        if !lb.check.is_empty() {
            if let Err(e) = run(&lb.check).await {
                write_atomic(&lb.config, &old).await?;
                return Err(format!(
                    "the new load balancer configuration was refused: {e}"
                ));
            }
        }
        run(&lb.reload)
            .await
            .map_err(|e| format!("reloading the load balancer: {e}"))
    }
}

/// `config` with target group `name`'s marked block holding `servers` (None when it has no
/// such block).
pub fn rewrite(
    config: &str,
    name: &str,
    kind: &str,
    servers: &[(String, String)],
) -> Option<String> {
    let begin = format!("slipway:servers {name} begin");
    let end = format!("slipway:servers {name} end");
    let mut out = String::new();
    let mut inside = false;
    let mut found = false;
    for line in config.split_inclusive('\n') {
        if line.contains(&end) {
            inside = false;
        }
        if inside {
            continue;
        }
        out.push_str(line);
        if line.contains(&begin) {
            inside = true;
            found = true;
            let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
            for (instance, address) in servers {
                out.push_str(&match kind {
                    "haproxy" => format!("{indent}server {instance} {address}\n"),
                    _ => format!("{indent}server {address};\n"),
                });
            }
            if servers.is_empty() && kind == "nginx" {
                // An upstream needs a server: one that is always down.
                out.push_str(&format!("{indent}server 127.0.0.1:9 down;\n"));
            }
        }
    }
    found.then_some(out)
}

async fn write_atomic(path: &std::path::Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("slipway-new");
    tokio::fs::write(&tmp, text)
        .await
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| format!("replacing {}: {e}", path.display()))
}

async fn run(argv: &[String]) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| format!("{} took longer than 30 s", argv[0]))?
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} exited {}: {}",
            argv[0],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn rewrites_only_the_marked_block() {
        let cfg = "backend web\n    # slipway:servers web begin\n    server old 10.0.0.1:80\n    # slipway:servers web end\n    option httpchk\nbackend api\n    # slipway:servers api begin\n    # slipway:servers api end\n";
        let servers = vec![
            ("h1".to_owned(), "127.0.0.1:8081".to_owned()),
            ("h2".to_owned(), "127.0.0.1:8082".to_owned()),
        ];
        let out = rewrite(cfg, "web", "haproxy", &servers).unwrap();
        assert_eq!(out, "backend web\n    # slipway:servers web begin\n    server h1 127.0.0.1:8081\n    server h2 127.0.0.1:8082\n    # slipway:servers web end\n    option httpchk\nbackend api\n    # slipway:servers api begin\n    # slipway:servers api end\n");
        let nginx = rewrite(
            "upstream web {\n  # slipway:servers web begin\n  # slipway:servers web end\n}\n",
            "web",
            "nginx",
            &[],
        )
        .unwrap();
        assert!(nginx.contains("  server 127.0.0.1:9 down;\n"));
        assert!(rewrite(cfg, "nope", "haproxy", &servers).is_none());
    }
}
