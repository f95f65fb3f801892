//! The stripe-like service every HTTP gateway test starts from: a daemon
//! whose policy protects an HTTPS upstream on `127.170.N.2:8443`, served by
//! the gateway on `127.170.N.1:9001`; `finance-agent` may pay (CEL limit,
//! approval, budget) and read customers, `other-agent` may only read them.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{
    DaemonProc, TestEnv,
    gateway::{TestCa, Upstream, config, subnet},
    root_or_skip,
};

pub struct Fixture {
    // Dropped in declaration order: the daemon first, so that it does not
    // pin or attach anything after the environment has been uninstalled.
    daemon: Option<DaemonProc>,
    pub upstream: Upstream,
    pub net: u32,
    pub secret: String,
    pub secret_file: PathBuf,
    pub env: TestEnv,
}

impl Fixture {
    /// The daemon's process id.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, DaemonProc::pid)
    }

    /// Stop the daemon and start it again over its pins (the upstream and
    /// the directories stay).
    pub fn restart(&mut self) {
        self.restart_with(|_| {});
    }

    /// `restart`, running `between` while no daemon runs.
    pub fn restart_with(&mut self, between: impl FnOnce(&Self)) {
        drop(self.daemon.take());
        between(self);
        self.daemon = Some(DaemonProc::start(&self.env));
    }

    /// The service's base URL at the gateway.
    pub fn base(&self) -> String {
        format!("http://127.170.{}.1:9001", self.net)
    }

    /// The gateway's address.
    pub fn gateway(&self) -> String {
        format!("127.170.{}.1", self.net)
    }

    /// The fixture's policy with `routes` (YAML lines) added to the
    /// service's routes and `identities` to its identities.
    pub fn policy_with(&self, routes: &str, identities: &str) -> String {
        let last_route = "      - {method: GET, path: /v1/stream, action: stream}\n";
        policy(
            self.net,
            &self.env.dir.join("pki").join("ca.pem"),
            &self.secret_file,
            identities,
        )
        .replace(last_route, &format!("{last_route}{routes}"))
    }

    /// Load `text` as the policy; it must be accepted.
    pub fn reload_policy(&self, text: &str) {
        self.env.write_policy(text);
        let out = self.env.cli(&["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The policy, with `extra` appended.
pub fn policy(net: u32, ca: &Path, secret_file: &Path, extra: &str) -> String {
    format!(
        r#"version: 1
label: gateway-test
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {{amount: number, currency: string, customer: string}}
services:
  - id: stripe
    url: https://upstream.test:8443
    address: 127.170.{net}.2:8443
    ca_file: {ca}
    port: 9001
    approval_timeout: 30s
    credential: {{header: Authorization, prefix: "Bearer ", file: {secret}}}
    routes:
      - {{id: create-payment, method: POST, path: /v1/payment_intents, action: create_payment}}
      - id: get-customer
        method: GET
        path: "/v1/customers/{{id}}"
        action: get_customer
        resource: "customer/{{id}}"
        mask: [email, cards.number, "**.ssn"]
      - {{method: GET, path: /v1/big, action: big, mask: [rows]}}
      - {{method: GET, path: /v1/text, action: text}}
      - {{method: GET, path: /v1/stream, action: stream}}
identities:
  - id: finance-agent
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.currency == "usd" && params.amount <= 5000
          approval_if: params.amount > 1000
        - {{id: reads, tool: stripe, actions: [get_customer, big, text, stream]}}
    budgets:
      - {{id: daily-spend, tool: stripe, actions: [create_payment], limit: 2000, per: day, sum: params.amount, unit: USD}}
  - id: other-agent
    tools:
      allow:
        - {{id: other-reads, tool: stripe, actions: [get_customer]}}
{extra}"#,
        ca = ca.display(),
        secret = secret_file.display(),
    )
}

/// Start the fixture (`None` only on an explicit opt-out of root tests).
pub fn start(name: &str) -> Option<Fixture> {
    if !root_or_skip(name) {
        return None;
    }
    let net = subnet();
    let env = TestEnv::new(name, "version: 1\n");
    let up_ip = format!("127.170.{net}.2");
    let ca = TestCa::new(&env.dir, &up_ip);
    let secret = format!("sk_test_{}{}", std::process::id(), net * 7919);
    let secret_file = env.dir.join("stripe.key");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    env.write_policy(&policy(net, &ca.ca, &secret_file, ""));
    env.write_config(&config(net, "  max_mask_bytes: 1048576\n"));
    let upstream = Upstream::start(&env, &up_ip, 8443, Some(&ca));
    let daemon = DaemonProc::start(&env);
    Some(Fixture {
        env,
        daemon: Some(daemon),
        upstream,
        net,
        secret,
        secret_file,
    })
}

/// A form-encoded payment of `amount` USD.
pub fn pay(amount: &str) -> Value {
    json!({"method": "POST", "path": "/v1/payment_intents",
           "form": {"amount": amount, "currency": "usd", "customer": "cus_1"}})
}
