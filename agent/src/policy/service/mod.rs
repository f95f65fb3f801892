//! Services a policy protects: upstream HTTP APIs and MCP servers that
//! agents reach only through the daemon's L7 gateway, which maps each
//! request to a tool call and judges it with the identity's tool rules.
//!
//! This module holds the validated form (`Service`, `Route`, templates and
//! mask paths) and the pure matching logic; the gateway (`crate::gateway`)
//! does the I/O.

mod check;
pub mod doc;
pub mod params;
pub mod strict_json;
mod template;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use check::{Declared, only_path};
pub use doc::ServiceKind;
pub use template::{MaskPath, MaskSeg, PathTemplate, Segment, Template};

use super::SourceLoc;

/// How long a request that needs approval is held, unless the service says.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(120);

/// What an MCP service with masks does with answer text that is not JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaskText {
    /// Withheld (a JSON-RPC error stands in for the message).
    #[default]
    Withhold,
    /// Passed, with the JSON inside it masked.
    Pass,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub id: String,
    pub description: Option<String>,
    pub kind: ServiceKind,
    pub upstream: Upstream,
    /// The gateway port agents use.
    pub port: u16,
    /// Tool name of calls to this service (routes may override it).
    pub tool: String,
    pub credential: Option<Credential>,
    /// Masked in every response of the service.
    pub mask: Vec<MaskPath>,
    /// MCP: what happens to answer text that is not JSON (`mask_text`).
    pub mask_text: MaskText,
    pub routes: Vec<Route>,
    pub approval_timeout: Duration,
    /// The upstream may read a path's last `.json`-like suffix as a format
    /// (`format_suffixes`, default true).
    pub format_suffixes: bool,
    pub loc: SourceLoc,
}

impl Service {
    /// The first route matching a request, with the path variables.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        let segments = split_path(path)?;
        self.routes.iter().find_map(|r| {
            if r.method.as_deref().is_some_and(|m| m != method) {
                return None;
            }
            r.path.matches(&segments).map(|vars| (r, vars))
        })
    }

    /// The URL upstream, when the service is reached over HTTP.
    pub fn url(&self) -> Option<&UpstreamUrl> {
        match &self.upstream {
            Upstream::Url(u) => Some(u),
            Upstream::Command(_) => None,
        }
    }
}

/// Where the gateway forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    Url(UpstreamUrl),
    /// A stdio MCP server the daemon runs.
    Command(Command),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    /// Lowercase host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`""` for none).
    pub base_path: String,
    /// Connect here instead of resolving `host`.
    pub address: Option<SocketAddr>,
    /// Trust these CAs instead of the host's roots.
    pub ca_file: Option<PathBuf>,
}

impl UpstreamUrl {
    /// `host:port` as a `Host` header says it (default ports omitted).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority()
        )
    }

    /// The host as an address, when the URL names one directly.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, Secret)>,
    pub cwd: Option<PathBuf>,
    pub user: Option<String>,
}

/// A value the daemon reads on its own side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    File(PathBuf),
    Env(String),
    /// A literal (command environments only).
    Value(String),
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "environment variable {v}"),
            Self::Value(_) => f.write_str("a literal value"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// Lowercase header name.
    pub header: String,
    pub prefix: String,
    pub secret: Secret,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub id: String,
    /// Uppercase; `None` = any method.
    pub method: Option<String>,
    pub path: PathTemplate,
    pub tool: String,
    pub action: String,
    pub resource: Option<Template>,
    pub mask: Vec<MaskPath>,
    pub loc: SourceLoc,
}

/// A request to a service, as `policy test` and `policy explain` state it
/// (the gateway reads the same parts from the wire).
#[derive(Clone, Debug, Default)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The path, optionally with `?query`.
    pub target: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// The tool call a request to a service makes.
#[derive(Clone, Debug)]
pub struct HttpCall<'s> {
    pub route: &'s Route,
    pub tool: String,
    pub action: String,
    pub resource: String,
    pub params: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no route of service `{service}` matches {method} {path}; unknown routes are denied")]
    NoRoute {
        service: String,
        method: String,
        path: String,
    },
    #[error(
        "the path's last segment `{segment}` ends in what servers such as Rails and Django REST framework read as a response format (`.{suffix}`), so service `{service}` may act on `{stem}` instead of what was judged: refused (a service that reads dots in paths literally sets `format_suffixes: false`)"
    )]
    FormatSuffix {
        service: String,
        segment: String,
        stem: String,
        suffix: String,
    },
    #[error(transparent)]
    Params(#[from] params::ParamsError),
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no-route",
            Self::FormatSuffix { .. } => "ambiguous-path",
            Self::Params(p) => p.code(),
        }
    }
}

impl Service {
    /// Map a whole request to its tool call, as the gateway does.
    pub fn call_for<'s>(
        &'s self,
        policy: &super::Policy,
        req: &HttpRequest<'_>,
    ) -> Result<HttpCall<'s>, RequestError> {
        let (path, query) = match req.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.target, None),
        };
        let method = req.method.to_ascii_uppercase();
        let (route, vars) = self
            .route(&method, path)
            .ok_or_else(|| RequestError::NoRoute {
                service: self.id.clone(),
                method: method.clone(),
                path: path.to_string(),
            })?;
        self.refuse_format_suffix(route, path)?;
        let schema = policy.schema_for(&route.tool, &route.action);
        let params = params::extract(&vars, query, req.content_type, req.body, schema)?;
        Ok(HttpCall {
            route,
            tool: route.tool.clone(),
            action: route.action.clone(),
            resource: route
                .resource
                .as_ref()
                .map(|t| t.render(&vars))
                .unwrap_or_default(),
            params,
        })
    }

    /// A path whose last segment (the last one not empty: servers read
    /// `acct_root.json/` the same way) a variable matched, ending — once
    /// percent-decoded, as servers decode it — in `.` and letters or digits
    /// (`acct_root.json`, `acct_root.%6Ason`), is read by servers that take
    /// format suffixes as that value without its suffix (`acct_root`): the
    /// call judged would not be the call made.
    pub fn refuse_format_suffix(&self, route: &Route, path: &str) -> Result<(), RequestError> {
        if !self.format_suffixes {
            return Ok(());
        }
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let Some(at) = segs.iter().rposition(|s| !s.is_empty()) else {
            return Ok(());
        };
        let tpl = &route.path.segments;
        let by_variable = tpl.iter().take(at + 1).enumerate().any(|(i, t)| {
            matches!(t, Segment::Rest(_)) || (i == at && matches!(t, Segment::Var(_)))
        });
        if !by_variable {
            return Ok(());
        }
        let segment = template::decode(segs[at]).unwrap_or_else(|| segs[at].to_string());
        let Some((stem, suffix)) = segment.rsplit_once('.') else {
            return Ok(());
        };
        if stem.is_empty()
            || suffix.is_empty()
            || !suffix.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Ok(());
        }
        Err(RequestError::FormatSuffix {
            service: self.id.clone(),
            stem: stem.to_string(),
            suffix: suffix.to_string(),
            segment,
        })
    }
}

/// The segments of a request path (`/a/b` → `["a", "b"]`), or `None` for a
/// path the gateway refuses to interpret: not absolute, empty or dot
/// segments, encoded slashes, backslashes or dots, or a `;` (servlet
/// containers read `/a/..;/b` as `/b`, dropping a segment's `;…`). What the
/// gateway matches must be what the upstream sees, so nothing ambiguous
/// passes.
pub fn split_path(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let lower = rest.to_ascii_lowercase();
    if rest.contains(['\\', ';'])
        || ["%2f", "%5c", "%2e", "%00", "%3b"]
            .iter()
            .any(|e| lower.contains(e))
    {
        return None;
    }
    let segs: Vec<&str> = rest.split('/').collect();
    // A trailing slash is an empty last segment; anywhere else it is `//`.
    let (last, body) = segs.split_last()?;
    if body.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return None;
    }
    if *last == "." || *last == ".." {
        return None;
    }
    Some(segs)
}

#[cfg(test)]
mod tests;
