//! `services:` as written: the upstreams a policy protects, reached by
//! agents only through the daemon's L7 gateway.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A protected upstream: an HTTP API or an MCP server.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceDoc {
    /// Lowercase letters, digits, `-`, `_`, `.`; also the default tool name.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `http` (default): requests map to tool calls through `routes`.
    /// `mcp`: a Model Context Protocol server; `tools/call` is the call.
    #[serde(default)]
    pub kind: ServiceKind,
    /// Base URL of the upstream (`https://api.stripe.com`, optionally with
    /// a path prefix). Exactly one of `url` and `command`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// Connect to this `address:port` instead of resolving the URL's host
    /// (the certificate is still checked against the URL's host).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub address: Option<Spanned<String>>,
    /// A local MCP server speaking stdio, started by the daemon (`kind: mcp`).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub command: Option<Vec<Spanned<String>>>,
    /// Environment of the `command`: each value from a file or an
    /// environment variable of the daemon, or a literal.
    #[serde(default)]
    pub env: BTreeMap<String, SecretDoc>,
    /// Working directory of the `command`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cwd: Option<Spanned<String>>,
    /// Run the `command` as this user (name or uid); default: the daemon's.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub user: Option<Spanned<String>>,
    /// The gateway port agents reach this service on
    /// (`http://<gateway.listen>:PORT`).
    #[schemars(with = "u16")]
    pub port: Spanned<u16>,
    /// Tool name in rules and events; default: the service id.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tool: Option<Spanned<String>>,
    /// PEM file with the CA certificates to trust for this upstream, instead
    /// of the host's roots (internal services).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
    /// The credential the gateway adds to every forwarded request.
    #[serde(default)]
    pub credential: Option<CredentialDoc>,
    /// JSON fields replaced in every response before the agent sees it
    /// (`card.number`, `data.*.email`, `**.ssn`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub mask: Vec<Spanned<String>>,
    /// `kind: mcp` with `mask`: what happens to a text item (or text blob)
    /// of an answer that is not JSON the gateway can mask. `withhold`
    /// (default): the message is replaced by a JSON-RPC error. `pass`: the
    /// JSON inside it is masked and the rest passes, unless it names a
    /// masked field as a JSON member.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub mask_text: Option<Spanned<String>>,
    /// How requests map to tool calls (`kind: http`); anything else is
    /// denied.
    #[serde(default)]
    pub routes: Vec<RouteDoc>,
    /// How long a request that needs approval is held open ("120s").
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub approval_timeout: Option<Spanned<String>>,
    /// Whether the upstream may read a path's last `.json`-like suffix as
    /// a response format (Rails, Django REST framework, Grape; the
    /// default): a path variable's value ending in one is then refused.
    /// `false` for a service that reads dots in paths literally.
    #[serde(default)]
    pub format_suffixes: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    #[default]
    Http,
    Mcp,
}

/// A credential header: its value comes from the daemon's side.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialDoc {
    /// Header name; default `authorization`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub header: Option<Spanned<String>>,
    /// Text in front of the secret (e.g. "Bearer ").
    #[serde(default)]
    pub prefix: Option<String>,
    /// A file the daemon reads (one trailing newline removed). Exactly one
    /// of `file` and `env`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub file: Option<Spanned<String>>,
    /// An environment variable of the daemon.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub env: Option<Spanned<String>>,
}

/// Where a secret comes from: exactly one of `file`, `env`, `value`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretDoc {
    /// A file the daemon reads (trailing newline removed).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub file: Option<Spanned<String>>,
    /// An environment variable of the daemon.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub env: Option<Spanned<String>>,
    /// A literal (for `command` environments only; never for credentials).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub value: Option<Spanned<String>>,
}

/// Method and path template → tool call.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    /// Cited by events; default `SERVICE:N`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub id: Option<Spanned<String>>,
    /// `GET`, `POST`… or `*` for any method.
    #[schemars(with = "String")]
    pub method: Spanned<String>,
    /// Path template below the base URL: `/v1/customers/{id}`; a last
    /// segment `{name*}` takes the rest of the path.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// The tool call's action.
    #[schemars(with = "String")]
    pub action: Spanned<String>,
    /// Tool name; default: the service's.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tool: Option<Spanned<String>>,
    /// Resource template from path variables (`customer/{id}`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub resource: Option<Spanned<String>>,
    /// JSON fields replaced in this route's responses (besides the
    /// service's).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub mask: Vec<Spanned<String>>,
}
