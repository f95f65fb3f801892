//! Validation of `services:`: every value checked where it is written, and
//! the rule that makes the gateway the only path to a protected upstream.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_saphyr::Spanned;

use super::{
    Command, Credential, DEFAULT_APPROVAL_TIMEOUT, MaskPath, MaskText, PathTemplate, Route, Secret,
    Service, Template, Upstream, UpstreamUrl,
    doc::{CredentialDoc, RouteDoc, SecretDoc, ServiceDoc, ServiceKind},
};
use crate::policy::{
    Diagnostic, EgressVerdict, Policy, Protocol, SourceLoc, ToolSchema, decide::EgressTarget,
    validate::name_error,
};

/// The longest a request may be held for approval.
const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Services gathered from every file, with what must be unique across them.
#[derive(Default)]
pub struct Declared {
    pub services: Vec<Service>,
    ids: HashMap<String, SourceLoc>,
    ports: HashMap<u16, (String, SourceLoc)>,
    route_ids: HashMap<String, SourceLoc>,
}

struct Ctx<'a> {
    file: &'a Path,
    schemas: &'a [ToolSchema],
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn at<T>(&self, s: &Spanned<T>) -> SourceLoc {
        SourceLoc::of(self.file, s)
    }

    fn error(&mut self, loc: SourceLoc, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(loc, msg));
    }

    /// A path as written, relative ones taken from the policy file's
    /// directory.
    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn masks(&mut self, list: &[Spanned<String>]) -> Vec<MaskPath> {
        let mut out = Vec::new();
        for m in list {
            match MaskPath::parse(&m.value) {
                Ok(p) => out.push(p),
                Err(e) => {
                    let loc = self.at(m);
                    self.error(loc, e);
                }
            }
        }
        out
    }

    fn literal_name(&mut self, what: &str, s: &Spanned<String>) -> Option<String> {
        let v = s.value.trim();
        if v.is_empty() || v.contains(['*', '?', ' ']) {
            let loc = self.at(s);
            self.error(
                loc,
                format!(
                    "{what} `{}` must be a plain name (no spaces or wildcards)",
                    s.value
                ),
            );
            return None;
        }
        Some(v.to_string())
    }
}

impl Declared {
    /// Check the services of one file and add them.
    pub fn add(
        &mut self,
        file: &Path,
        docs: &[ServiceDoc],
        schemas: &[ToolSchema],
        diags: &mut Vec<Diagnostic>,
    ) {
        let mut ctx = Ctx {
            file,
            schemas,
            diags,
        };
        for doc in docs {
            let loc = ctx.at(&doc.id);
            let id = doc.id.value.clone();
            if let Some(msg) = name_error("service", &id) {
                ctx.error(loc.clone(), msg);
                continue;
            }
            if let Some(prev) = self.ids.get(&id) {
                ctx.error(loc, format!("service `{id}` is already defined at {prev}"));
                continue;
            }
            self.ids.insert(id.clone(), loc.clone());
            let port_loc = ctx.at(&doc.port);
            if doc.port.value == 0 {
                ctx.error(port_loc, "`port` 0 is not a port agents can reach");
            } else if let Some((other, at)) = self.ports.get(&doc.port.value) {
                ctx.error(
                    port_loc,
                    format!(
                        "port {} is already the port of service `{other}` ({at})",
                        doc.port.value
                    ),
                );
            } else {
                self.ports.insert(doc.port.value, (id.clone(), port_loc));
            }
            if let Some(s) = self.service(&mut ctx, doc, loc) {
                self.services.push(s);
            }
        }
    }

    fn service(&mut self, ctx: &mut Ctx<'_>, doc: &ServiceDoc, loc: SourceLoc) -> Option<Service> {
        let id = doc.id.value.clone();
        let errors_before = ctx.diags.len();
        let upstream = upstream(ctx, doc, &loc);
        let tool = match &doc.tool {
            Some(t) => ctx.literal_name("tool", t),
            None => Some(id.clone()),
        };
        let credential = doc.credential.as_ref().and_then(|c| {
            if doc.command.is_some() {
                let at = c.header.as_ref().map_or(loc.clone(), |h| ctx.at(h));
                ctx.error(
                    at,
                    "a `command` service gets its secrets through `env`, not `credential`",
                );
                return None;
            }
            credential(ctx, c, &loc)
        });
        let mask = ctx.masks(&doc.mask);
        let mask_text = match &doc.mask_text {
            None => MaskText::Withhold,
            Some(t) => match (t.value.as_str(), doc.kind) {
                (_, ServiceKind::Http) => {
                    let at = ctx.at(t);
                    ctx.error(
                        at,
                        "`mask_text` applies to MCP services (an HTTP service refuses any masked response that is not JSON)",
                    );
                    MaskText::Withhold
                }
                ("withhold", _) => MaskText::Withhold,
                ("pass", _) => MaskText::Pass,
                (other, _) => {
                    let at = ctx.at(t);
                    ctx.error(
                        at,
                        format!("`mask_text` is `withhold` or `pass`, not {other:?}"),
                    );
                    MaskText::Withhold
                }
            },
        };
        let approval_timeout = match &doc.approval_timeout {
            None => DEFAULT_APPROVAL_TIMEOUT,
            Some(t) => match humantime::parse_duration(&t.value) {
                Ok(d) if d > Duration::ZERO && d <= MAX_APPROVAL_TIMEOUT => d,
                Ok(_) => {
                    let at = ctx.at(t);
                    ctx.error(at, "`approval_timeout` must be more than 0 and at most 1h");
                    DEFAULT_APPROVAL_TIMEOUT
                }
                Err(e) => {
                    let at = ctx.at(t);
                    ctx.error(at, format!("`approval_timeout` {:?}: {e}", t.value));
                    DEFAULT_APPROVAL_TIMEOUT
                }
            },
        };
        let tool = tool?;
        let mut routes = Vec::new();
        match doc.kind {
            ServiceKind::Http if doc.routes.is_empty() => ctx.diags.push(
                Diagnostic::error(
                    loc.clone(),
                    format!("service `{id}` has no routes: every request to it would be denied"),
                )
                .with_hint("add `routes:` mapping methods and paths to actions"),
            ),
            ServiceKind::Http => {
                for (n, r) in doc.routes.iter().enumerate() {
                    if let Some(route) = self.route(ctx, &id, &tool, n, r) {
                        routes.push(route);
                    }
                }
            }
            ServiceKind::Mcp => {
                if let Some(r) = doc.routes.first() {
                    let at = ctx.at(&r.path);
                    ctx.error(
                        at,
                        "an MCP service has no routes: each `tools/call` is a call of its tool",
                    );
                }
            }
        }
        if ctx.diags.len() > errors_before {
            return None;
        }
        Some(Service {
            id,
            description: doc.description.clone(),
            kind: doc.kind,
            upstream: upstream?,
            port: doc.port.value,
            tool,
            credential,
            mask,
            mask_text,
            routes,
            approval_timeout,
            format_suffixes: doc.format_suffixes.unwrap_or(true),
            loc,
        })
    }

    fn route(
        &mut self,
        ctx: &mut Ctx<'_>,
        service: &str,
        service_tool: &str,
        n: usize,
        r: &RouteDoc,
    ) -> Option<Route> {
        let loc = ctx.at(&r.path);
        let id = match &r.id {
            Some(i) => i.value.clone(),
            None => format!("{service}:{}", n + 1),
        };
        if let Some(prev) = self.route_ids.get(&id) {
            let at = r.id.as_ref().map_or(loc.clone(), |i| ctx.at(i));
            ctx.error(at, format!("route id `{id}` is already used at {prev}"));
            return None;
        }
        self.route_ids.insert(id.clone(), loc.clone());
        let method = match r.method.value.trim() {
            "*" => Some(None),
            m if !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(Some(m.to_ascii_uppercase()))
            }
            _ => {
                let at = ctx.at(&r.method);
                ctx.error(
                    at,
                    format!(
                        "`{}` is not an HTTP method (GET, POST…, or `*`)",
                        r.method.value
                    ),
                );
                None
            }
        };
        let path = match PathTemplate::parse(&r.path.value) {
            Ok(p) => Some(p),
            Err(e) => {
                ctx.error(loc.clone(), e);
                None
            }
        };
        let action = ctx.literal_name("action", &r.action);
        let tool = match &r.tool {
            Some(t) => ctx.literal_name("tool", t),
            None => Some(service_tool.to_string()),
        };
        let mask = ctx.masks(&r.mask);
        let (method, path, action, tool) = (method?, path?, action?, tool?);
        let vars: Vec<&str> = path.vars().collect();
        let resource = match &r.resource {
            None => None,
            Some(t) => match Template::parse(&t.value, &vars) {
                Ok(t) => Some(t),
                Err(e) => {
                    let at = ctx.at(t);
                    ctx.error(at, e);
                    return None;
                }
            },
        };
        // Path variables are parameters: a schema covering the call must
        // declare them, or every request on the route would be denied.
        if let Some(schema) = ctx.schemas.iter().find(|s| {
            s.tool.matches(&tool)
                && (s.actions.is_empty() || s.actions.iter().any(|a| a.matches(&action)))
        }) && let Some(v) = vars.iter().find(|v| !schema.params.contains_key(**v))
        {
            ctx.diags.push(
                Diagnostic::error(
                    loc.clone(),
                    format!("path variable `{v}` is not a declared parameter of {tool}.{action}"),
                )
                .with_hint("declare it in the tool's schema, or rename the variable"),
            );
            return None;
        }
        Some(Route {
            id,
            method,
            path,
            tool,
            action,
            resource,
            mask,
            loc,
        })
    }
}

fn upstream(ctx: &mut Ctx<'_>, doc: &ServiceDoc, loc: &SourceLoc) -> Option<Upstream> {
    match (&doc.url, &doc.command) {
        (Some(_), Some(c)) | (None, Some(c)) if doc.kind != ServiceKind::Mcp => {
            let at = c.first().map_or(loc.clone(), |a| ctx.at(a));
            ctx.error(
                at,
                "`command` runs a local MCP server: it needs `kind: mcp`",
            );
            None
        }
        (Some(u), Some(_)) => {
            let at = ctx.at(u);
            ctx.error(at, "a service has either a `url` or a `command`, not both");
            None
        }
        (None, None) => {
            ctx.error(
                loc.clone(),
                "a service needs a `url` (or, for a local MCP server, a `command`)",
            );
            None
        }
        (Some(u), None) => {
            for (key, set) in [
                ("env", !doc.env.is_empty()),
                ("cwd", doc.cwd.is_some()),
                ("user", doc.user.is_some()),
            ] {
                if set {
                    let at = ctx.at(u);
                    ctx.error(at, format!("`{key}` belongs to `command` services"));
                }
            }
            url(ctx, doc, u)
        }
        (None, Some(argv)) => {
            if let Some(a) = &doc.address {
                let at = ctx.at(a);
                ctx.error(at, "`address` belongs to `url` services");
            }
            if let Some(c) = &doc.ca_file {
                let at = ctx.at(c);
                ctx.error(at, "`ca_file` belongs to `https` services");
            }
            if argv.is_empty() || argv[0].value.trim().is_empty() {
                ctx.error(loc.clone(), "`command` is empty");
                return None;
            }
            let mut env = Vec::new();
            for (name, s) in &doc.env {
                let ok = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    ctx.error(
                        loc.clone(),
                        format!("`{name}` is not an environment variable name"),
                    );
                    continue;
                }
                env.push((name.clone(), secret(ctx, s, loc, true)?));
            }
            Some(Upstream::Command(Command {
                argv: argv.iter().map(|a| a.value.clone()).collect(),
                env,
                cwd: doc.cwd.as_ref().map(|c| ctx.path(&c.value)),
                user: doc.user.as_ref().map(|u| u.value.clone()),
            }))
        }
    }
}

fn url(ctx: &mut Ctx<'_>, doc: &ServiceDoc, u: &Spanned<String>) -> Option<Upstream> {
    let at = ctx.at(u);
    let uri: hyper::Uri = match u.value.parse() {
        Ok(uri) => uri,
        Err(e) => {
            ctx.error(at, format!("`{}` is not a URL: {e}", u.value));
            return None;
        }
    };
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            ctx.error(
                at,
                format!("`{}`: the URL must start with https:// or http://", u.value),
            );
            return None;
        }
    };
    let Some(authority) = uri.authority() else {
        ctx.error(at, format!("`{}` names no host", u.value));
        return None;
    };
    if authority.as_str().contains('@') {
        ctx.error(
            at,
            "credentials in the URL would reach agents' error messages; use `credential`",
        );
        return None;
    }
    if uri.query().is_some() || u.value.contains('#') {
        ctx.error(at, "the base URL takes no query or fragment");
        return None;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        ctx.error(at, format!("`{}` names no host", u.value));
        return None;
    }
    let address = match &doc.address {
        None => None,
        Some(a) => match a.value.parse::<std::net::SocketAddr>() {
            Ok(sa) => Some(sa),
            Err(e) => {
                let at = ctx.at(a);
                ctx.error(
                    at,
                    format!("`address` {:?} is not ADDRESS:PORT: {e}", a.value),
                );
                return None;
            }
        },
    };
    let ca_file = match &doc.ca_file {
        Some(c) if !tls => {
            let at = ctx.at(c);
            ctx.error(at, "`ca_file` applies to https URLs only");
            return None;
        }
        Some(c) => Some(ctx.path(&c.value)),
        None => None,
    };
    Some(Upstream::Url(UpstreamUrl {
        tls,
        port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        host,
        base_path: uri.path().trim_end_matches('/').to_string(),
        address,
        ca_file,
    }))
}

fn credential(ctx: &mut Ctx<'_>, c: &CredentialDoc, loc: &SourceLoc) -> Option<Credential> {
    let header = match &c.header {
        None => "authorization".to_string(),
        Some(h) => {
            let ok = !h.value.is_empty()
                && h.value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !ok {
                let at = ctx.at(h);
                ctx.error(at, format!("`{}` is not an HTTP header name", h.value));
                return None;
            }
            h.value.to_ascii_lowercase()
        }
    };
    let s = SecretDoc {
        file: c.file.clone(),
        env: c.env.clone(),
        value: None,
    };
    Some(Credential {
        header,
        prefix: c.prefix.clone().unwrap_or_default(),
        secret: secret(ctx, &s, loc, false)?,
    })
}

fn secret(ctx: &mut Ctx<'_>, s: &SecretDoc, loc: &SourceLoc, literal_ok: bool) -> Option<Secret> {
    let given = [s.file.is_some(), s.env.is_some(), s.value.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    let what = if literal_ok {
        "`file`, `env` or `value`"
    } else {
        "`file` or `env`"
    };
    if given != 1 {
        ctx.error(loc.clone(), format!("a secret takes exactly one of {what}"));
        return None;
    }
    if let Some(f) = &s.file {
        return Some(Secret::File(ctx.path(&f.value)));
    }
    if let Some(e) = &s.env {
        if e.value.is_empty() || e.value.contains(['=', '\0']) {
            let at = ctx.at(e);
            ctx.error(
                at,
                format!("`{}` is not an environment variable name", e.value),
            );
            return None;
        }
        return Some(Secret::Env(e.value.clone()));
    }
    s.value.as_ref().map(|v| Secret::Value(v.value.clone()))
}

/// Errors for every identity that could reach a protected upstream without
/// the gateway: an allow, approval or grantable egress rule covering the
/// upstream's host (or its address) and port. The gateway must be the only
/// path, or its rules and credentials protect nothing.
pub fn only_path(policy: &Policy) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for s in &policy.services {
        let Some(u) = s.url() else { continue };
        let mut targets = vec![EgressTarget {
            ip: u.ip(),
            host: u.ip().is_none().then(|| u.host.clone()),
            port: u.port,
            protocol: Protocol::Tcp,
        }];
        if let Some(a) = u.address {
            targets.push(EgressTarget {
                ip: Some(a.ip()),
                host: None,
                port: a.port(),
                protocol: Protocol::Tcp,
            });
        }
        for ident in &policy.identities {
            for t in &targets {
                let shown = t.ip.map_or_else(|| u.host.clone(), |ip| ip.to_string());
                let (verdict, _, rule) = policy.judge_egress(&ident.id, t);
                let grantable = ident.grantable.iter().find(|g| {
                    let dest = match &g.destination {
                        crate::policy::Destination::Cidr(c) => {
                            t.ip.is_some_and(|ip| c.contains_addr(&crate::policy::net::norm_of(ip)))
                        }
                        crate::policy::Destination::Host(h) => {
                            t.host.as_deref().is_some_and(|n| h.matches(n))
                        }
                    };
                    dest && g.protocol != Protocol::Udp
                        && g.ports.iter().any(|p| p.contains(t.port))
                });
                let rule = match verdict {
                    EgressVerdict::Allow | EgressVerdict::ApprovalRequired => rule,
                    _ => match grantable {
                        Some(g) => policy.rule(g.rule).map(|r| r.id.clone()),
                        None => continue,
                    },
                };
                let info = rule.as_deref().and_then(|r| policy.rule_by_id(r));
                let loc = info.map_or_else(|| ident.loc.clone(), |r| r.loc.clone());
                out.push(
                    Diagnostic::error(
                        loc,
                        format!(
                            "identity `{}` may reach {shown}:{} directly (rule `{}`), but service `{}` protects it: the gateway must be the only path",
                            ident.id,
                            t.port,
                            rule.as_deref().unwrap_or("?"),
                            s.id
                        ),
                    )
                    .with_hint(format!(
                        "remove the rule, or add an egress deny for the upstream; agents reach the service at port {}",
                        s.port
                    )),
                );
            }
        }
    }
    out.sort_by(|a, b| a.loc.cmp(&b.loc));
    out.dedup();
    out
}
