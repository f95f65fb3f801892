//! `palisade events`: audit events, readable in a terminal. `--follow`
//! streams them from the daemon as they are written; otherwise trail files
//! are read. The same filters apply to both.

use std::{
    io::{BufRead, BufReader, IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde_json::Value;

use crate::{api::client, proto};

#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub identities: Vec<String>,
    pub kinds: Vec<String>,
    pub verdicts: Vec<String>,
}

impl Filters {
    fn keeps(&self, v: &Value) -> bool {
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
        let one_of = |set: &[String], val: &str| set.is_empty() || set.iter().any(|s| s == val);
        one_of(&self.identities, field("identity"))
            && one_of(&self.kinds, field("kind"))
            && one_of(&self.verdicts, field("verdict"))
    }
}

pub fn run(
    socket: &Path,
    follow: bool,
    files: &[PathBuf],
    filters: Filters,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let color = !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    if !follow {
        if files.is_empty() {
            anyhow::bail!(
                "give trail files to read (e.g. /var/log/palisade/audit.jsonl), or --follow to stream from the daemon"
            );
        }
        for file in files {
            let f = std::fs::File::open(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for (i, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("{}:{}: not a JSON record", file.display(), i + 1);
                    continue;
                };
                if filters.keeps(&v) && emit(&mut out, &line, &v, json, color).is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !files.is_empty() {
        anyhow::bail!("--follow streams from the daemon: leave out the files");
    }
    super::block_on(async move {
        let mut c = client::connect(socket).await?;
        let mut stream = c
            .watch_events(proto::WatchEventsRequest {
                identities: filters.identities,
                kinds: filters.kinds,
                verdicts: filters.verdicts,
            })
            .await
            .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?
            .into_inner();
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("event stream ended: {}", s.message()))?
        {
            let v: Value = serde_json::from_str(&msg.json).unwrap_or(Value::Null);
            if emit(&mut out, &msg.json, &v, json, color).is_err() {
                break; // stdout closed (e.g. piped into head)
            }
        }
        anyhow::Ok(())
    })??;
    Ok(ExitCode::SUCCESS)
}

fn emit(
    out: &mut impl Write,
    raw: &str,
    v: &Value,
    json: bool,
    color: bool,
) -> std::io::Result<()> {
    if json {
        writeln!(out, "{raw}")?;
    } else {
        writeln!(out, "{}", human(v, color))?;
    }
    out.flush()
}

/// `v` with its strings made safe to print (`audit::terminal_safe`).
fn terminal_safe(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(crate::audit::terminal_safe(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(terminal_safe).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    (
                        crate::audit::terminal_safe(k).into_owned(),
                        terminal_safe(v),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One readable line: time, verdict, kind, identity, then what matters for
/// that kind.
pub fn human(v: &Value, color: bool) -> String {
    let v = &terminal_safe(v);
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    // 2026-11-03T10:00:00.123456789Z → 2026-11-03 10:00:00.123
    let time = s("time");
    let short = if time.len() >= 23 {
        format!("{} {}", &time[..10], &time[11..23])
    } else {
        time.to_string()
    };
    let verdict = s("verdict").to_uppercase();
    let painted = if color {
        let code = match s("verdict") {
            "deny" | "lost" | "rejected" => "31",
            "audit" => "33",
            "allow" | "applied" => "32",
            _ => "36",
        };
        format!("\x1b[1;{code}m{verdict:<8}\x1b[0m")
    } else {
        format!("{verdict:<8}")
    };
    let mut line = format!(
        "{short}  {painted} {:<11} {:<20}",
        s("kind"),
        if s("identity").is_empty() {
            "-"
        } else {
            s("identity")
        }
    );
    if let (Some(pid), comm) = (n("pid"), s("comm")) {
        line.push_str(&format!(" pid={pid}"));
        if !comm.is_empty() {
            line.push_str(&format!(" {comm}"));
        }
    }
    if let (ip, Some(port)) = (s("dst_ip"), n("dst_port")) {
        if ip.contains(':') {
            line.push_str(&format!(" → [{ip}]:{port}/{}", s("protocol")));
        } else {
            line.push_str(&format!(" → {ip}:{port}/{}", s("protocol")));
        }
    } else if !s("protocol").is_empty() {
        line.push_str(&format!(" socket {}", s("protocol")));
    }
    if let Some(h) = v.get("http") {
        let hs = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("");
        let what = if hs("route").is_empty() {
            hs("mcp_method")
        } else {
            hs("route")
        };
        line.push_str(&format!(
            " {} {} {what} → {}",
            hs("service"),
            hs("method"),
            h.get("status").and_then(Value::as_u64).unwrap_or(0)
        ));
    }
    line.push_str(&format!("  {}", s("reason")));
    if !s("rule").is_empty() {
        line.push_str(&format!(" rule={}", s("rule")));
    }
    if let Some(count) = n("count") {
        line.push_str(&format!(" count={count}"));
    }
    if !s("detail").is_empty() {
        line.push_str(&format!(" ({})", s("detail")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_lines() {
        let v: Value = serde_json::from_str(
            r#"{"time":"2026-11-03T10:00:00.123456789Z","kind":"network","identity":"clinical","verdict":"deny","reason":"default-deny","pid":42,"comm":"curl","dst_ip":"10.0.0.1","dst_port":443,"protocol":"tcp","seq":3}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            human(&v, false),
            "2026-11-03 10:00:00.123  DENY     network     clinical             pid=42 curl → 10.0.0.1:443/tcp  default-deny"
        );
        let f = Filters {
            verdicts: vec!["deny".into()],
            kinds: vec!["network".into(), "socket".into()],
            ..Filters::default()
        };
        assert!(f.keeps(&v));
        let f = Filters {
            identities: vec!["other".into()],
            ..Filters::default()
        };
        assert!(!f.keeps(&v));
    }
}
