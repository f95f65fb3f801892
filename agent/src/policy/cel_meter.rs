//! A cost budget for CEL. The interpreter has no limits of its own, and a
//! condition is written by the policy but fed by the caller: a quadratic
//! `params.items.all(x, params.items.exists(y, …))` over a 10,000-item
//! parameter is a hundred million steps. Every comprehension (`all`,
//! `exists`, `exists_one`, `map`, `filter`) is therefore rewritten when the
//! policy loads so that each iteration first calls a step counter; once a
//! decision has used its budget the counter fails, the loop stops at once,
//! and the decision is a deny (`evaluation-budget-exceeded`).
//!
//! Outside comprehensions an expression costs at most its length times the
//! size of its inputs (no loops, no recursion), so counting iterations
//! bounds the whole evaluation. A wall-clock limit backs the count up for
//! iterations that each copy large values.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use cel::{
    ExecutionError,
    common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, operators},
};

/// Loop iterations one decision may spend over all its conditions: a scan
/// of 100,000 items, or 300 × 300 nested.
pub const MAX_STEPS: u64 = 100_000;
/// Wall-clock limit of one decision's conditions: a backstop for steps
/// that each copy large values (the step count is what normally stops a
/// costly condition, and it does not depend on the machine's load).
pub const MAX_TIME: Duration = Duration::from_secs(1);
/// The counter's name; no policy may call it (`check_references`).
pub const STEP_FN: &str = "__palisade_step";
/// The clock is read once every this many steps.
const CLOCK_EVERY: u64 = 1024;

/// What one decision has left.
#[derive(Clone, Copy, Debug)]
pub struct Meter {
    pub steps_left: u64,
    /// Set on the first evaluation.
    pub deadline: Option<Instant>,
    /// The budget ran out (it stays out for the rest of the decision).
    pub exceeded: Option<Exceeded>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    Steps,
    Time,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            steps_left: MAX_STEPS,
            deadline: None,
            exceeded: None,
        }
    }
}

thread_local! {
    /// The meter of the evaluation running on this thread; `None` outside
    /// one (the counter then never fails).
    static CURRENT: Cell<Option<Meter>> = const { Cell::new(None) };
}

/// Run `f` with `meter` as this thread's budget; returns what is left.
pub fn metered<T>(meter: Meter, f: impl FnOnce() -> T) -> (T, Meter) {
    let mut m = meter;
    m.deadline.get_or_insert_with(|| Instant::now() + MAX_TIME);
    CURRENT.with(|c| c.set(Some(m)));
    let out = f();
    let left = CURRENT.with(|c| c.take()).unwrap_or(m);
    (out, left)
}

/// The step counter the rewritten loops call: passes its argument through
/// while budget is left.
pub fn step(b: bool) -> Result<bool, ExecutionError> {
    CURRENT.with(|c| {
        let Some(mut m) = c.get() else {
            return Ok(b);
        };
        if m.exceeded.is_none() {
            if m.steps_left == 0 {
                m.exceeded = Some(Exceeded::Steps);
            } else {
                m.steps_left -= 1;
                if m.steps_left % CLOCK_EVERY == 0 && m.deadline.is_some_and(|d| Instant::now() > d)
                {
                    m.exceeded = Some(Exceeded::Time);
                }
            }
        }
        c.set(Some(m));
        match m.exceeded {
            None => Ok(b),
            Some(_) => Err(ExecutionError::function_error(
                STEP_FN,
                "evaluation budget exceeded",
            )),
        }
    })
}

/// A copy of `e` in which every comprehension iteration calls the counter.
pub fn meter(e: &IdedExpr) -> IdedExpr {
    let mut next_id = max_id(e) + 1;
    rewrite(e, &mut next_id)
}

fn max_id(e: &IdedExpr) -> u64 {
    let mut m = e.id;
    each_child(e, &mut |c| m = m.max(max_id(c)));
    m
}

fn each_child(e: &IdedExpr, f: &mut dyn FnMut(&IdedExpr)) {
    match &e.expr {
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                f(t);
            }
            c.args.iter().for_each(&mut *f);
        }
        Expr::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                f(x);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(&mut *f),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                    f(&me.key);
                    f(&me.value);
                }
            }
        }
        Expr::Select(s) => f(&s.operand),
        _ => {}
    }
}

fn node(id: &mut u64, expr: Expr) -> IdedExpr {
    *id += 1;
    IdedExpr { id: *id, expr }
}

fn call(id: &mut u64, func: &str, args: Vec<IdedExpr>) -> IdedExpr {
    node(
        id,
        Expr::Call(CallExpr {
            func_name: func.to_string(),
            target: None,
            args,
        }),
    )
}

fn rewrite(e: &IdedExpr, id: &mut u64) -> IdedExpr {
    let expr = match &e.expr {
        Expr::Call(c) => Expr::Call(CallExpr {
            func_name: c.func_name.clone(),
            target: c.target.as_ref().map(|t| Box::new(rewrite(t, id))),
            args: c.args.iter().map(|a| rewrite(a, id)).collect(),
        }),
        Expr::List(l) => {
            let mut l = l.clone();
            l.elements = l.elements.iter().map(|x| rewrite(x, id)).collect();
            Expr::List(l)
        }
        Expr::Map(m) => {
            let mut m = m.clone();
            for entry in &mut m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &mut entry.expr {
                    me.key = rewrite(&me.key, id);
                    me.value = rewrite(&me.value, id);
                }
            }
            Expr::Map(m)
        }
        Expr::Select(s) => {
            let mut s = s.clone();
            s.operand = Box::new(rewrite(&s.operand, id));
            Expr::Select(s)
        }
        Expr::Comprehension(c) => {
            let mut c = c.clone();
            c.iter_range = rewrite(&c.iter_range, id);
            c.accu_init = rewrite(&c.accu_init, id);
            c.loop_cond = rewrite(&c.loop_cond, id);
            c.loop_step = rewrite(&c.loop_step, id);
            c.result = rewrite(&c.result, id);
            if matches!(c.loop_cond.expr, Expr::Literal(_)) {
                // `map`, `filter`, `exists_one`: the interpreter appends to
                // the result in place only while the loop condition is a
                // literal, so count in the step instead: in its guard when
                // it has one, else behind a guard that is always true.
                match &mut c.loop_step.expr {
                    Expr::Call(step_call)
                        if step_call.func_name == operators::CONDITIONAL
                            && step_call.target.is_none()
                            && step_call.args.len() == 3 =>
                    {
                        let guard = std::mem::take(&mut step_call.args[0]);
                        step_call.args[0] = call(id, STEP_FN, vec![guard]);
                    }
                    _ => {
                        let always = node(id, Expr::Literal(LiteralValue::Boolean(true.into())));
                        let guard = call(id, STEP_FN, vec![always]);
                        let accu = node(id, Expr::Ident(c.accu_var.clone()));
                        let step = std::mem::take(&mut c.loop_step);
                        c.loop_step = call(id, operators::CONDITIONAL, vec![guard, step, accu]);
                    }
                }
            } else {
                // `all`, `exists`: a failing loop condition stops the loop
                // at once (a failing step would only be deferred).
                let cond = std::mem::take(&mut c.loop_cond);
                c.loop_cond = call(id, STEP_FN, vec![cond]);
            }
            Expr::Comprehension(c)
        }
        other => other.clone(),
    };
    IdedExpr { id: e.id, expr }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::cel::{Bindings, CelExpr, EvalError, Scope};

    fn expr(source: &str) -> CelExpr {
        let none = BTreeMap::new();
        CelExpr::compile(
            source,
            &Scope {
                context_fields: &none,
                params: None,
                params_owner: "t",
            },
        )
        .unwrap_or_else(|e| panic!("{source}: {e:?}"))
    }

    fn items(n: usize) -> Bindings<'static> {
        let params = serde_json::json!({ "items": (0..n).collect::<Vec<_>>() });
        let empty = serde_json::Map::new();
        Bindings::new(
            params.as_object().unwrap_or(&empty),
            &empty,
            &empty,
            "t",
            "a",
            "r",
        )
    }

    #[test]
    fn a_quadratic_condition_over_a_large_parameter_is_stopped() {
        let e = expr("params.items.all(x, params.items.exists(y, y == x))");
        let b = items(10_000);
        let r = e.eval_bool(&b);
        assert!(matches!(r, Err(EvalError::Budget(_))), "{r:?}");
        assert_eq!(
            r.unwrap_err().reason(),
            "evaluation-budget-exceeded",
            "the deny says why"
        );
        // The budget is the decision's: a second condition of the same
        // decision does not start afresh.
        let cheap = expr("params.items.exists(y, y == 5)");
        assert!(matches!(cheap.eval_bool(&b), Err(EvalError::Budget(_))));
        // A condition that would absorb the error still denies.
        let absorbed =
            expr("params.items.map(x, params.items.filter(y, y < x)).size() > 0 || true");
        assert!(matches!(
            absorbed.eval_bool(&items(10_000)),
            Err(EvalError::Budget(_))
        ));
    }

    #[test]
    fn linear_conditions_within_the_budget_keep_their_meaning() {
        for (source, want) in [
            ("params.items.all(x, x >= 0)", true),
            ("params.items.exists(x, x == 49999)", true),
            ("params.items.exists_one(x, x == 7)", true),
            ("params.items.filter(x, x % 2 == 0).size() == 25000", true),
            ("params.items.map(x, x * 2)[3] == 6", true),
            ("params.items.map(x, x < 3, x)[2] == 2", true),
            ("[1, 'a'].exists(x, x == 1)", true),
            ("[1, 2].all(x, x > 1)", false),
        ] {
            // One decision each: the budget is per decision.
            assert_eq!(expr(source).eval_bool(&items(50_000)), Ok(want), "{source}");
        }
        // Errors stay errors, not budget exhaustion.
        let r = expr("params.items.all(x, x.nope)").eval_bool(&items(3));
        assert!(matches!(r, Err(EvalError::Failed(_))), "{r:?}");
    }

    #[test]
    fn the_counter_cannot_be_called_by_a_policy() {
        let none = BTreeMap::new();
        let err = CelExpr::compile(
            "__palisade_step(true)",
            &Scope {
                context_fields: &none,
                params: None,
                params_owner: "t",
            },
        )
        .unwrap_err();
        assert!(err.message.contains("reserved"), "{}", err.message);
    }
}
