//! CEL conditions in tool rules and budgets (`when`, `approval_if`, `sum`),
//! with the cel-rust interpreter.
//!
//! Every expression is compiled when the policy loads, and its references are
//! checked against what a call can provide: the variables `params`,
//! `context`, `identity`, `tool`, `action`, `resource`; the declared fields
//! of `context` and `identity`; and, where a parameter schema covers the
//! rule's tool, the declared parameters. Evaluation errors are errors, never
//! "false": the decision engine turns them into a deny.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex, OnceLock},
};

use cel::{
    Context, Program, Value,
    common::{
        ast::{Expr, IdedExpr},
        value::{CowVal, Val},
    },
    context::VariableResolver,
};

/// Variables a condition may use.
pub const VARIABLES: &[&str] = &[
    "params", "context", "identity", "tool", "action", "resource",
];
/// Context fields the daemon fills from its clock.
pub const CONTEXT_BUILTINS: &[&str] = &["time", "unix", "hour", "minute", "weekday", "date"];
/// Fields of `identity`.
pub const IDENTITY_FIELDS: &[&str] = &["id", "org", "tenant", "owner", "roles", "labels", "mode"];
/// Longest expression accepted.
const MAX_EXPR_LEN: usize = 4096;

use super::cel_meter::{self, Exceeded, Meter, STEP_FN};

/// A compiled condition, shared cheaply between policy generations.
#[derive(Clone)]
pub struct CelExpr {
    pub source: String,
    /// The expression with a step counter in every loop (`cel_meter`).
    metered: Arc<IdedExpr>,
}

/// Why a condition has no value. Both deny; the reason code differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvalError {
    /// The expression failed (missing field, wrong type…).
    Failed(String),
    /// The decision used up its evaluation budget (`cel_meter`).
    Budget(String),
}

impl EvalError {
    /// The decision's reason code.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Failed(_) => "evaluation-error",
            Self::Budget(_) => "evaluation-budget-exceeded",
        }
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(m) | Self::Budget(m) => f.write_str(m),
        }
    }
}

impl fmt::Debug for CelExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CelExpr({:?})", self.source)
    }
}

/// Why an expression was rejected, with the 1-based column inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelError {
    pub column: usize,
    pub message: String,
}

/// What the checker knows about the names an expression may use.
pub struct Scope<'a> {
    /// Declared caller context fields (beyond the built-ins).
    pub context_fields: &'a BTreeMap<String, super::ParamType>,
    /// Declared parameters, when a schema covers the rule's tool and actions.
    pub params: Option<&'a BTreeMap<String, super::ParamType>>,
    /// How to name the schema in messages (`stripe.create_payment`).
    pub params_owner: &'a str,
}

impl CelExpr {
    pub fn compile(source: &str, scope: &Scope<'_>) -> Result<Self, CelError> {
        if source.len() > MAX_EXPR_LEN {
            return Err(CelError {
                column: 1,
                message: format!(
                    "expression is {} bytes long; the limit is {MAX_EXPR_LEN}",
                    source.len()
                ),
            });
        }
        if source.trim().is_empty() {
            return Err(CelError {
                column: 1,
                message: "empty expression".into(),
            });
        }
        let program = Program::compile(source).map_err(|e| {
            let first = e.errors.first();
            CelError {
                column: first.map_or(1, |p| p.pos.1.max(1) as usize),
                message: first.map_or_else(|| e.to_string(), |p| p.msg.clone()),
            }
        })?;
        check_references(program.expression(), source, scope)?;
        Ok(Self {
            source: source.to_string(),
            metered: Arc::new(cel_meter::meter(program.expression())),
        })
    }

    pub fn eval(&self, bindings: &Bindings) -> Result<Value, EvalError> {
        thread_local! {
            // The standard library (and the step counter), built once per
            // thread: building it per evaluation costs more than the
            // evaluation itself.
            static STDLIB: Context<'static, 'static> = {
                let mut c = Context::default();
                if let Err(e) = c.add_function(STEP_FN, cel_meter::step) {
                    tracing::error!(error = ?e, "registering the CEL step counter");
                }
                c
            };
        }
        let meter = *crate::bpf::lock(&bindings.meter);
        let (result, left) = cel_meter::metered(meter, || {
            STDLIB.with(|stdlib| {
                let mut ctx = stdlib.new_inner_scope();
                ctx.set_variable_resolver(bindings);
                Value::resolve(&self.metered, &ctx)
            })
        });
        *crate::bpf::lock(&bindings.meter) = left;
        // A spent budget denies whatever the expression made of the error
        // (`error || true` is true in CEL).
        match left.exceeded {
            Some(Exceeded::Steps) => Err(EvalError::Budget(format!(
                "`{}` exceeded the evaluation budget of {} loop steps per decision",
                self.source,
                cel_meter::MAX_STEPS
            ))),
            Some(Exceeded::Time) => Err(EvalError::Budget(format!(
                "`{}` exceeded the evaluation time limit of {} ms per decision",
                self.source,
                cel_meter::MAX_TIME.as_millis()
            ))),
            None => result.map_err(|e| EvalError::Failed(format!("`{}`: {e}", self.source))),
        }
    }

    /// Evaluate to a boolean; anything else is an error.
    pub fn eval_bool(&self, bindings: &Bindings) -> Result<bool, EvalError> {
        match self.eval(bindings)? {
            Value::Bool(b) => Ok(b),
            other => Err(EvalError::Failed(format!(
                "`{}` is {other:?}, not a boolean",
                self.source
            ))),
        }
    }

    /// Evaluate to a number (for budget sums).
    pub fn eval_number(&self, bindings: &Bindings) -> Result<f64, EvalError> {
        match self.eval(bindings)? {
            Value::Int(i) => Ok(i as f64),
            Value::UInt(u) => Ok(u as f64),
            Value::Float(f) if f.is_finite() => Ok(f),
            other => Err(EvalError::Failed(format!(
                "`{}` is {other:?}, not a number",
                self.source
            ))),
        }
    }
}

/// The values a call provides, in `VARIABLES` order. Each is built and
/// converted for the interpreter on its first use, then shared by every
/// expression of the decision: a variable no expression reads (the clock
/// fields of `context`, `identity` for most rules) costs nothing, and
/// converting per expression cost more than evaluating.
pub struct Bindings<'a> {
    make: Box<dyn Fn(usize) -> Value + Send + Sync + 'a>,
    converted: [OnceLock<Option<Box<dyn Val>>>; VARIABLES.len()],
    /// The decision's evaluation budget, shared by all its expressions.
    meter: Mutex<Meter>,
}

impl Bindings<'static> {
    pub fn new(
        params: &serde_json::Map<String, serde_json::Value>,
        context: &serde_json::Map<String, serde_json::Value>,
        identity: &serde_json::Map<String, serde_json::Value>,
        tool: &str,
        action: &str,
        resource: &str,
    ) -> Self {
        let values = [
            json_object(params),
            json_object(context),
            json_object(identity),
            Value::from(tool.to_string()),
            Value::from(action.to_string()),
            Value::from(resource.to_string()),
        ];
        Self::lazy(move |i| values[i].clone())
    }
}

impl<'a> Bindings<'a> {
    /// Bindings whose variable `i` (an index into `VARIABLES`) is
    /// `make(i)`, called at most once, when an expression first reads it.
    pub fn lazy(make: impl Fn(usize) -> Value + Send + Sync + 'a) -> Self {
        Self {
            make: Box::new(make),
            converted: Default::default(),
            meter: Mutex::new(Meter::default()),
        }
    }
}

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let i = VARIABLES.iter().position(|v| *v == variable)?;
        self.converted[i]
            .get_or_init(|| Box::<dyn Val>::try_from((self.make)(i)).ok())
            .as_deref()
            .map(CowVal::Borrowed)
    }
}

pub fn json_object(map: &serde_json::Map<String, serde_json::Value>) -> Value {
    let m: HashMap<String, Value> = map
        .iter()
        .map(|(k, v)| (k.clone(), json_to_cel(v)))
        .collect();
    Value::from(m)
}

/// JSON → CEL: integers stay integers, other numbers become doubles.
pub fn json_to_cel(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(i),
            (None, Some(u), _) => Value::UInt(u),
            (None, None, Some(f)) => Value::Float(f),
            _ => Value::Null,
        },
        J::String(s) => Value::from(s.clone()),
        J::Array(a) => Value::from(a.iter().map(json_to_cel).collect::<Vec<_>>()),
        J::Object(o) => json_object(o),
    }
}

/// Walk the expression: every free variable must be known, and every
/// `context.X`, `identity.X`, `params.X` must name a known field.
fn check_references(root: &IdedExpr, source: &str, scope: &Scope<'_>) -> Result<(), CelError> {
    let mut bound: Vec<String> = Vec::new();
    walk(root, &mut bound, source, scope)
}

fn column_of(source: &str, needle: &str) -> usize {
    source
        .find(needle)
        .map_or(1, |i| source[..i].chars().count() + 1)
}

fn walk(
    e: &IdedExpr,
    bound: &mut Vec<String>,
    source: &str,
    scope: &Scope<'_>,
) -> Result<(), CelError> {
    match &e.expr {
        Expr::Ident(name) => {
            if !bound.iter().any(|b| b == name) && !VARIABLES.contains(&name.as_str()) {
                return Err(CelError {
                    column: column_of(source, name),
                    message: format!(
                        "unknown variable `{name}` (available: {})",
                        VARIABLES.join(", ")
                    ),
                });
            }
            Ok(())
        }
        Expr::Select(sel) => {
            if let Expr::Ident(base) = &sel.operand.expr
                && !bound.iter().any(|b| b == base)
            {
                check_field(base, &sel.field, source, scope)?;
            }
            walk(&sel.operand, bound, source, scope)
        }
        Expr::Call(call) => {
            if call.func_name == STEP_FN {
                return Err(CelError {
                    column: column_of(source, STEP_FN),
                    message: format!("`{STEP_FN}` is reserved"),
                });
            }
            if let Some(target) = &call.target {
                walk(target, bound, source, scope)?;
            }
            for a in &call.args {
                walk(a, bound, source, scope)?;
            }
            Ok(())
        }
        Expr::List(list) => list
            .elements
            .iter()
            .try_for_each(|x| walk(x, bound, source, scope)),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| {
            if let cel::common::ast::EntryExpr::MapEntry(m) = &entry.expr {
                walk(&m.key, bound, source, scope)?;
                walk(&m.value, bound, source, scope)?;
            }
            Ok(())
        }),
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, source, scope)?;
            walk(&c.accu_init, bound, source, scope)?;
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            let r = walk(&c.loop_cond, bound, source, scope)
                .and_then(|()| walk(&c.loop_step, bound, source, scope))
                .and_then(|()| walk(&c.result, bound, source, scope));
            bound.truncate(depth);
            r
        }
        _ => Ok(()),
    }
}

fn check_field(base: &str, field: &str, source: &str, scope: &Scope<'_>) -> Result<(), CelError> {
    let at = || column_of(source, &format!("{base}.{field}"));
    match base {
        "context" => {
            if CONTEXT_BUILTINS.contains(&field) || scope.context_fields.contains_key(field) {
                Ok(())
            } else {
                let mut known: Vec<&str> = CONTEXT_BUILTINS.to_vec();
                known.extend(scope.context_fields.keys().map(String::as_str));
                Err(CelError {
                    column: at(),
                    message: format!(
                        "`context.{field}` is not a known context field (known: {}; declare others under `context:`)",
                        known.join(", ")
                    ),
                })
            }
        }
        "identity" if !IDENTITY_FIELDS.contains(&field) => Err(CelError {
            column: at(),
            message: format!(
                "`identity.{field}` is not an identity field (known: {})",
                IDENTITY_FIELDS.join(", ")
            ),
        }),
        "params" => match scope.params {
            Some(declared) if !declared.contains_key(field) => Err(CelError {
                column: at(),
                message: format!(
                    "`params.{field}` is not a parameter of {} (declared: {})",
                    scope.params_owner,
                    declared
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            _ => Ok(()),
        },
        "tool" | "action" | "resource" => Err(CelError {
            column: at(),
            message: format!("`{base}` is a string; it has no field `{field}`"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(
        ctx: &'a BTreeMap<String, crate::policy::ParamType>,
        params: Option<&'a BTreeMap<String, crate::policy::ParamType>>,
    ) -> Scope<'a> {
        Scope {
            context_fields: ctx,
            params,
            params_owner: "stripe.create_payment",
        }
    }

    fn bindings(params: serde_json::Value, context: serde_json::Value) -> Bindings<'static> {
        let empty = serde_json::Map::new();
        Bindings::new(
            params.as_object().unwrap_or(&empty),
            context.as_object().unwrap_or(&empty),
            &empty,
            "stripe",
            "create_payment",
            "acct_1",
        )
    }

    #[test]
    fn evaluates_parameter_and_context_conditions() {
        let none = BTreeMap::new();
        let e = CelExpr::compile(
            "params.amount <= 5000 && context.hour >= 9",
            &scope(&none, None),
        )
        .unwrap();
        let b = bindings(
            serde_json::json!({"amount": 7200}),
            serde_json::json!({"hour": 10}),
        );
        assert_eq!(e.eval_bool(&b), Ok(false));
        let b = bindings(
            serde_json::json!({"amount": 4999.5}),
            serde_json::json!({"hour": 10}),
        );
        assert_eq!(e.eval_bool(&b), Ok(true));
        let s = CelExpr::compile(
            "params.destination == 'internal-ehr.myorg'",
            &scope(&none, None),
        )
        .unwrap();
        let b = bindings(
            serde_json::json!({"destination": "internal-ehr.myorg"}),
            serde_json::json!({}),
        );
        assert_eq!(s.eval_bool(&b), Ok(true));
    }

    #[test]
    fn missing_fields_and_wrong_types_are_errors_not_false() {
        let none = BTreeMap::new();
        let e = CelExpr::compile("params.amount <= 5000", &scope(&none, None)).unwrap();
        assert!(
            e.eval_bool(&bindings(serde_json::json!({}), serde_json::json!({})))
                .is_err()
        );
        let n = CelExpr::compile("params.amount", &scope(&none, None)).unwrap();
        assert!(
            n.eval_bool(&bindings(
                serde_json::json!({"amount": 1}),
                serde_json::json!({})
            ))
            .is_err()
        );
        assert_eq!(
            n.eval_number(&bindings(
                serde_json::json!({"amount": 12.5}),
                serde_json::json!({})
            )),
            Ok(12.5)
        );
    }

    #[test]
    fn rejects_syntax_errors_with_a_column() {
        let none = BTreeMap::new();
        let err = CelExpr::compile("params.amount <=", &scope(&none, None)).unwrap_err();
        assert_eq!(err.column, 17);
        assert!(err.message.contains("Syntax error"), "{}", err.message);
    }

    #[test]
    fn rejects_unknown_names() {
        let none = BTreeMap::new();
        let err = CelExpr::compile("amount > 5", &scope(&none, None)).unwrap_err();
        assert!(
            err.message.contains("unknown variable `amount`"),
            "{}",
            err.message
        );
        let err = CelExpr::compile("context.hours > 5", &scope(&none, None)).unwrap_err();
        assert!(
            err.message
                .contains("`context.hours` is not a known context field"),
            "{}",
            err.message
        );
        assert_eq!(err.column, 1);
        let err = CelExpr::compile("identity.team == 'x'", &scope(&none, None)).unwrap_err();
        assert!(err.message.contains("identity.team"), "{}", err.message);
        let declared: BTreeMap<String, crate::policy::ParamType> =
            [("amount".to_string(), crate::policy::ParamType::Number)].into();
        let err = CelExpr::compile("params.amout > 1", &scope(&none, Some(&declared))).unwrap_err();
        assert!(
            err.message.contains(
                "`params.amout` is not a parameter of stripe.create_payment (declared: amount)"
            ),
            "{}",
            err.message
        );
        // Comprehension variables are bound inside the macro.
        CelExpr::compile("params.items.all(i, i.price < 100)", &scope(&none, None)).unwrap();
    }
}

#[cfg(test)]
mod documented {
    //! The examples docs/policy.md shows must work as written.
    use super::*;

    #[test]
    fn documented_condition_examples_evaluate() {
        let none = BTreeMap::new();
        let scope = Scope {
            context_fields: &none,
            params: None,
            params_owner: "t",
        };
        let empty = serde_json::Map::new();
        let params = serde_json::json!({
            "amount": 4000, "destination": "internal-ehr.myorg",
            "items": [{"price": 10}, {"price": 99}],
            "url": "https://internal.example/x", "name": "release-7"
        });
        let context = serde_json::json!({"hour": 10});
        let identity = serde_json::json!({"roles": ["admin", "viewer"]});
        let b = Bindings::new(
            params.as_object().unwrap_or(&empty),
            context.as_object().unwrap_or(&empty),
            identity.as_object().unwrap_or(&empty),
            "t",
            "a",
            "r",
        );
        for expr in [
            "params.amount <= 5000",
            "params.destination == \"internal-ehr.myorg\"",
            "context.hour >= 9 && context.hour < 18",
            "\"admin\" in identity.roles",
            "params.items.all(i, i.price < 100)",
            "params.url.startsWith(\"https://internal.\")",
            "params.name.matches(\"^[a-z0-9-]+$\")",
        ] {
            let e = CelExpr::compile(expr, &scope).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
            assert_eq!(e.eval_bool(&b), Ok(true), "{expr}");
        }
    }
}
